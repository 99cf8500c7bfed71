"""Property-based hardening: malformed datasets, journals, architecture records, config
frames, range specs and latency tables. Each input gives a clear error (a ValueError subclass
that names the file or the field) or a correct answer; never another exception, never a
silent NaN, never a changed file on error."""

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import profilers
from profilers import ArchError, DatasetError, DatasetWriter, read_dataset, write_dataset
from profilers._dataset import LATENCY_COLUMNS, METADATA_KEY, REQUIRED_COLUMNS

_SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: Values a hostile but fair user might put anywhere.
NASTY = st.sampled_from([None, math.nan, math.inf, -math.inf, -1, 0, 1, 4, 7, 1e30, -1e13, 2.5, True, "x", "",
                         "fp32", "relu", "ok", "failed", "conv2d", [], {}])
_MODULES = ("conv2d", "pool2d", "linear", "mhsa")


def _valid_rows():
    rows = []
    for i, m in enumerate(_MODULES):
        for cfg in profilers.sample_configs(m, 2, seed=i):
            rows.append(profilers.measurement_row(cfg, samples_ms=[1.0 + i, 1.2 + i], number_per_run=2,
                                                  backend="torch", device="cpu", device_id="dev"))
    return rows


_ROWS = _valid_rows()
_META = {"backend": "torch", "device": "cpu", "device_id": "dev", "runs": []}


def _write_table(path: Path, rows: list[dict], meta: dict) -> None:
    """Write rows as they are (any types): a column of mixed types becomes strings."""
    cols = {k: [r.get(k) for r in rows] for k in dict.fromkeys(k for r in rows for k in r)}
    arrays = {}
    for k, v in cols.items():
        try:
            arrays[k] = pa.array(v)
            if pa.types.is_struct(arrays[k].type) and arrays[k].type.num_fields == 0:
                raise pa.ArrowInvalid("Parquet cannot store a struct without fields (a column of {} and None)")
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            arrays[k] = pa.array([None if x is None else str(x) for x in v])
    table = pa.table(arrays).replace_schema_metadata({METADATA_KEY: json.dumps(meta).encode()})
    pq.write_table(table, path)


def _assert_correct_frame(df) -> None:
    """What read_dataset returns is usable: valid configs, finite positive latencies."""
    for rec in df.to_dict("records"):
        cfg = profilers.config_from_row(rec, strict=True)
        assert cfg.key == rec["config_key"] or rec["config_key"]
        for col in LATENCY_COLUMNS:
            v = float(rec[col])
            assert math.isfinite(v) and v >= 0


@_SETTINGS
@given(
    data=st.data(),
    edits=st.lists(st.tuples(st.integers(0, len(_ROWS) - 1), st.sampled_from(sorted(set(_ROWS[0]) | {"cin", "kernel",
                   "groups", "heads", "embed_dim", "channels", "mode"}))), min_size=1, max_size=3),
    drop=st.lists(st.sampled_from(list(REQUIRED_COLUMNS) + ["cin", "channels", "kernel"]), max_size=1),
    meta_edit=st.sampled_from([None, ("schema_version", 7), ("catalogue_version", 99), ("catalogue_version", "2"),
                               ("runs", "x"), ("schema_version", None)]),
)
def test_malformed_datasets_are_refused_or_read_correctly(data, edits, drop, meta_edit):
    rows = [dict(r) for r in _ROWS]
    for i, col in edits:
        rows[i][col] = data.draw(NASTY)
    rows = [{k: v for k, v in r.items() if k not in drop} for r in rows]
    meta = {**_META, "schema_version": profilers.SCHEMA_VERSION, "catalogue_version": profilers.CATALOGUE_VERSION}
    if meta_edit:
        meta[meta_edit[0]] = meta_edit[1]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "bad.parquet"
        _write_table(path, rows, meta)
        before = path.read_bytes()
        try:
            df = read_dataset(path, include_failed=True)
        except DatasetError as e:
            assert str(path) in str(e)
        else:
            _assert_correct_frame(df[df["status"] == "ok"])
        assert path.read_bytes() == before


@_SETTINGS
@given(
    data=st.data(),
    field=st.sampled_from(["device_id", "status", "latency_ms_median", "latency_ms_p10", "config_key", "module",
                           "cin", "kernel", "batch_size", "dtype", "channels"]),
    torn=st.booleans(),
)
def test_stale_journals_are_checked_and_leave_files_alone(data, field, torn):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "r.parquet"
        write_dataset(path, _ROWS[:2], _META)
        row = {**_ROWS[3], field: data.draw(NASTY)}
        journal = Path(d) / "r.parquet.journal.jsonl"
        journal.write_text(json.dumps(row, allow_nan=True) + "\n" + ('{"config_key": "to' if torn else ""))
        files = {p: p.read_bytes() for p in (path, journal)}
        try:
            w = DatasetWriter(path, _META)
        except DatasetError as e:
            assert "r.parquet.journal.jsonl:1" in str(e)
            assert {p: p.read_bytes() for p in files} == files
            return
        w.close()
        df = read_dataset(path, include_failed=True)
        _assert_correct_frame(df[df["status"] == "ok"])


def _record():
    mods = [profilers.ArchModule(profilers.make_config("conv2d", cin=3, cout=8, h=16, w=16, kernel=3), "conv2d"),
            profilers.ArchModule(profilers.make_config("mhsa", tokens=16, embed_dim=32, heads=4), "sdpa")]
    return profilers.ArchRecord("net", ((1, 3, 16, 16),), tuple(mods),
                                (profilers.UnmappedOp("cat", "compute", 2, 4096),),
                                measured={"latency_ms": 1.5, "p10_ms": 1.4}).to_json()


_RECORD_PATHS = [("name",), ("format_version",), ("input_shapes",), ("modules",), ("unmapped",), ("measured",),
                 ("modules", 0), ("modules", 0, "cout"), ("modules", 0, "kernel"), ("modules", 0, "groups"),
                 ("modules", 1, "heads"), ("modules", 1, "module"), ("modules", 0, "dtype"), ("unmapped", 0),
                 ("unmapped", 0, "bytes"), ("unmapped", 0, "count"), ("unmapped", 0, "kind"),
                 ("measured", "latency_ms"), ("input_shapes", 0, 1)]


@_SETTINGS
@given(data=st.data(), edits=st.lists(st.sampled_from(_RECORD_PATHS), min_size=1, max_size=3),
       delete=st.booleans(), as_list=st.booleans())
def test_malformed_records_are_refused_or_read_correctly(data, edits, delete, as_list):
    obj = _record()
    for path in edits:
        node = obj
        try:
            for k in path[:-1]:
                node = node[k]
            if delete and isinstance(node, dict):
                node.pop(path[-1], None)
            else:
                node[path[-1]] = data.draw(NASTY)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit replaced the parent
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "r.json"
        p.write_text(json.dumps([obj] if as_list else obj))
        before = p.read_bytes()
        try:
            rec = profilers.load_record(p)
        except ArchError as e:
            assert str(p) in str(e)
        else:
            for m in rec.modules:
                assert m.config == profilers.make_config(m.config.module, **m.config.values)
            assert all(u.count >= 0 and u.bytes >= 0 and u.kind in ("view", "compute") for u in rec.unmapped)
            if rec.measured and rec.measured.get("latency_ms") is not None:
                assert math.isfinite(rec.measured["latency_ms"]) and rec.measured["latency_ms"] > 0
        assert p.read_bytes() == before


def _column(draw, field, n):
    kind = draw(st.sampled_from(["omit", "valid", "nasty", "mixed"]))
    if kind == "omit":
        return None
    valid = field.default if field.choices is None else draw(st.sampled_from(field.choices))
    if kind == "valid":
        return [valid] * n
    if kind == "nasty":
        return [draw(NASTY)] * n
    return [draw(st.one_of(st.just(valid), NASTY)) for _ in range(n)]


@_SETTINGS
@given(data=st.data(), module=st.sampled_from(_MODULES), n=st.integers(1, 3), frame=st.booleans())
def test_config_frames_are_refused_naming_the_field_or_encoded_finite(data, module, n, frame):
    from jaxlat._features import check_columns, encode_columns

    spec = profilers.get_spec(module)
    cols = {}
    for f in spec.all_fields:
        col = _column(data.draw, f, n)
        if col is not None:
            cols[f.name] = col
    if frame:
        cols = {k: pd.Series(v, dtype=object) for k, v in cols.items()}
    try:
        checked = check_columns(module, cols, source="frame")
    except ValueError as e:
        assert "frame: " in str(e) and (module in str(e) or "columns" in str(e))
        return
    for i in range(n):
        values = {k: v[i].item() if hasattr(v[i], "item") else v[i] for k, v in checked.items()}
        profilers.make_config(module, **values)  # every row is a valid config
        for name, given_col in cols.items():  # given values are kept, not replaced
            if given_col[i] is not None and not (isinstance(given_col[i], float) and math.isnan(given_col[i])):
                assert values[name] == given_col[i]
    x = np.asarray(encode_columns(module, checked))
    assert x.shape[0] == n and np.isfinite(x).all()


@_SETTINGS
@given(
    field=st.sampled_from(["cin", "kernel", "groups", "stride", "h", "bias", "dtype"]),
    text=st.one_of(
        st.from_regex(r"-?[0-9]{1,6}(\.[05])?(:-?[0-9]{1,6}(:(log|lin|[0-9]{1,2}))?)?", fullmatch=True),
        st.from_regex(r"([0-9]{1,3},){1,3}[0-9]{0,3}", fullmatch=True),
        st.sampled_from(["=cin", "=h", "=foo", "=bias", "", ":", "nan", "inf:3", "true", "fp16,fp32", "1:2:0"]),
    ),
)
def test_range_specs_give_valid_configs_or_name_the_field(field, text):
    spec = profilers.get_spec("conv2d")
    try:
        r = profilers.parse_range(spec.field(field), text)
        cfgs = profilers.sample_configs("conv2d", 3, seed=0, ranges={field: r})
    except ValueError as e:
        assert field in str(e) or "conv2d" in str(e)
        return
    assert len(cfgs) == 3 and all(c == profilers.make_config("conv2d", **c.values) for c in cfgs)


@_SETTINGS
@given(values=st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d", "e"]),
                                 st.one_of(st.floats(0.01, 100), st.sampled_from([math.nan, math.inf, 0.0, -1.0]))),
                       min_size=3, max_size=8))
def test_latency_tables_are_refused_or_clean(values):
    from jaxlat.transfer._adapt import check_latency_table

    table = pd.Series([v for _, v in values], index=[k for k, _ in values])
    try:
        t = check_latency_table(table, name="t.csv")
    except ValueError as e:
        assert str(e).startswith("t.csv: ")
        return
    assert t.index.is_unique and np.isfinite(t.to_numpy()).all() and (t.to_numpy() > 0).all()


def test_the_suite_really_checks_something():
    # The valid inputs the strategies start from are accepted as they are.
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "ok.parquet"
        write_dataset(path, _ROWS, _META)
        assert len(read_dataset(path)) == len(_ROWS)
        p = Path(d) / "r.json"
        p.write_text(json.dumps(_record()))
        assert len(profilers.load_record(p).modules) == 2
    with pytest.raises(ValueError):
        profilers.parse_range(profilers.get_spec("conv2d").field("cin"), "1:2:0")
