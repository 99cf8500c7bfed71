import json
import math
import re

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import profilers
from profilers import (
    DatasetError,
    DatasetWriter,
    measurement_row,
    read_dataset,
    sample_configs,
    write_dataset,
)
from profilers._dataset import METADATA_KEY


def _rows(device_id="dev-a", n_per=3):
    rows = []
    for i, m in enumerate(profilers.module_types()):
        for cfg in sample_configs(m, n_per, seed=i):
            rows.append(
                measurement_row(cfg, samples_ms=[1.0 + i, 1.1 + i, 0.9 + i], number_per_run=4,
                                backend="torch", device="cpu", device_id=device_id, utilization_achieved=0.0)
            )
    return rows


def _meta(device_id="dev-a"):
    return {"backend": "torch", "device": "cpu", "device_id": device_id, "runs": [{"seed": 0}]}


def test_write_then_read_is_lossless(tmp_path):
    rows = _rows()
    failed = measurement_row(profilers.make_config("add"), samples_ms=None, number_per_run=None, backend="torch",
                             device="cpu", device_id="dev-a", error="RuntimeError: boom")
    path = tmp_path / "d.parquet"
    write_dataset(path, rows + [failed], _meta())
    df = read_dataset(path, include_failed=True)
    assert len(df) == len(rows) + 1
    for row, rec in zip(rows, df.to_dict("records")):
        assert profilers.config_from_row(rec).key == row["config_key"]
        for k, v in row.items():
            got = rec[k]
            if isinstance(v, float) and math.isnan(v):
                assert math.isnan(got)
            elif v is None:
                assert got is None or got is pd.NA
            else:
                assert got == v, k
    assert df.attrs["jaxlat"][0]["schema_version"] == profilers.SCHEMA_VERSION
    assert len(read_dataset(path)) == len(rows)  # failed rows dropped by default
    assert read_dataset(path, include_failed=True)["error"].iloc[-1] == "RuntimeError: boom"


def _rewrite(path, table_fn=None, meta_fn=None):
    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[METADATA_KEY])
    if table_fn:
        table = table_fn(table)
    if meta_fn:
        meta = meta_fn(meta)
    pq.write_table(table.replace_schema_metadata({METADATA_KEY: json.dumps(meta).encode()}), path)


def _set_latency(value):
    def fn(table):
        col = table.column("latency_ms_median").to_pylist()
        col[2] = value
        idx = table.schema.get_field_index("latency_ms_median")
        return table.set_column(idx, "latency_ms_median", pa.array(col, pa.float64()))

    return fn


@pytest.mark.parametrize(
    "table_fn, meta_fn, message",
    [
        (_set_latency(float("nan")), None, "1 ok rows have NaN latency_ms_median"),
        (_set_latency(float("inf")), None, "1 ok rows have inf latency_ms_median"),
        (_set_latency(0.0), None, "1 ok rows have non-positive latency_ms_median"),
        (_set_latency(-2.0), None, "non-positive latency_ms_median"),
        (lambda t: t.drop_columns(["latency_ms_p90", "status"]), None, "missing columns ['latency_ms_p90', 'status']"),
        (None, lambda m: {**m, "schema_version": 99}, "schema_version=99 is unknown; this version of profilers reads 1, 2"),
        (lambda t: t.drop_columns(["graph_ops"]), None, "missing columns ['graph_ops']"),
    ],
)
def test_bad_datasets_are_rejected_with_their_reason(tmp_path, table_fn, meta_fn, message):
    path = tmp_path / "d.parquet"
    write_dataset(path, _rows(), _meta())
    _rewrite(path, table_fn, meta_fn)
    with pytest.raises(DatasetError, match=message.replace("[", r"\[").replace("]", r"\]")):
        read_dataset(path)


def test_files_that_are_not_datasets(tmp_path):
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet at all")
    with pytest.raises(DatasetError, match="not a readable Parquet file"):
        read_dataset(junk)
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"a": [1]}), plain)
    with pytest.raises(DatasetError, match="no 'jaxlat' metadata"):
        read_dataset(plain)
    with pytest.raises(DatasetError, match="no such dataset file"):
        read_dataset(tmp_path / "missing.parquet")


def test_unknown_module_types_are_rejected(tmp_path):
    path = tmp_path / "d.parquet"
    write_dataset(path, _rows(), _meta())
    _rewrite(path, lambda t: t.set_column(1, "module", pa.array(["warp_drive"] * t.num_rows)))
    with pytest.raises(DatasetError, match=r"unknown module types \['warp_drive'\]"):
        read_dataset(path)


def test_mixed_devices_need_to_be_asked_for(tmp_path):
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    write_dataset(a, _rows("dev-a"), _meta("dev-a"))
    write_dataset(b, _rows("dev-b"), _meta("dev-b"))
    with pytest.raises(DatasetError, match="from 2 different devices"):
        read_dataset([a, b])
    assert len(read_dataset([a, b], allow_mixed_devices=True)) == 2 * len(_rows())
    assert len(read_dataset([a, a])) == 2 * len(_rows())


def test_writer_recovers_rows_from_the_journal_and_refuses_other_devices(tmp_path):
    path = tmp_path / "d.parquet"
    rows = _rows()
    w = DatasetWriter(path, _meta(), flush_every=5)
    for r in rows[:12]:
        w.append(r)
    # Simulate a crash: no close(); the journal holds rows 11 and 12, a torn line follows.
    with open(w.journal, "a") as f:
        f.write('{"config_key": "torn')
    w._journal_f.close()
    w2 = DatasetWriter(path, _meta())
    assert w2.done_keys() == {r["config_key"] for r in rows[:12]}
    assert w2.recovered == 2
    w2.close()
    assert not w2.journal.exists()
    assert len(read_dataset(path)) == 12
    assert len(read_dataset(path).attrs["jaxlat"][0]["runs"]) == 2
    with pytest.raises(DatasetError, match="holds measurements of device 'dev-a'"):
        DatasetWriter(path, _meta("dev-b"))


def test_partial_rounds_survive_a_crash_and_a_flush(tmp_path):
    path = tmp_path / "p.parquet"
    rows = _rows()
    w = DatasetWriter(path, _meta(), flush_every=2)
    w.append_partial("k1", 0, {"samples_ms": [1.0], "number_per_run": 1, "utilization_achieved": 0.0})
    w.append(rows[0])
    w.append(rows[1])  # triggers a flush: the partial must stay journaled
    w.append_partial("k1", 1, {"samples_ms": [2.0], "number_per_run": 1, "utilization_achieved": 0.0})
    w._journal_f.close()  # crash
    w2 = DatasetWriter(path, _meta())
    assert sorted(w2.partials("k1")) == [0, 1]
    assert w2.partials("k1")[1]["samples_ms"] == [2.0]
    assert w2.done_keys() == {rows[0]["config_key"], rows[1]["config_key"]}
    w2.close()


def test_writer_creates_missing_directories(tmp_path):
    path = tmp_path / "new" / "dir" / "d.parquet"
    w = DatasetWriter(path, _meta())
    w.append(_rows()[0])
    w.close()
    assert len(read_dataset(path)) == 1


def test_version_1_files_are_read_with_null_backend_columns_and_resumed_as_version_2(tmp_path):
    from profilers._dataset import BACKEND_COLUMNS

    path = tmp_path / "v1.parquet"
    rows = _rows()
    write_dataset(path, rows, _meta())
    _rewrite(path, lambda t: t.drop_columns(list(BACKEND_COLUMNS)), lambda m: {**m, "schema_version": 1})
    df = read_dataset(path)
    assert df.attrs["jaxlat"][0]["schema_version"] == 1
    assert len(df) == len(rows) and all(df[c].isna().all() for c in BACKEND_COLUMNS)
    w = DatasetWriter(path, _meta())  # resuming rewrites the file in the current version
    w.append(measurement_row(profilers.make_config("add", channels=3), samples_ms=[1.0], number_per_run=1,
                             backend="torch", device="cpu", device_id="dev-a"))
    w.close()
    df2 = read_dataset(path)
    assert df2.attrs["jaxlat"][0]["schema_version"] == profilers.SCHEMA_VERSION == 2
    assert len(df2) == len(rows) + 1


def test_backend_columns_are_checked():
    cfg = profilers.make_config("add")
    row = measurement_row(cfg, samples_ms=[1.0], number_per_run=1, backend="tflite", device="cpu", device_id="x",
                          backend_columns={"delegate": "xnnpack", "graph_ops": "ADD", "graph_extra_ops": ""})
    assert (row["delegate"], row["graph_ops"], row["graph_extra_ops"]) == ("xnnpack", "ADD", "")
    with pytest.raises(ValueError, match=r"\['colour'\] are not dataset columns"):
        measurement_row(cfg, samples_ms=[1.0], number_per_run=1, backend="tflite", device="cpu", device_id="x",
                        backend_columns={"colour": "red"})


# -- concurrent writers and resume checks -------------------------------------------------------


def _write_rows_in_process(path, rows, device_id, barrier):
    import time

    w = DatasetWriter(path, _meta(device_id), flush_every=2)
    barrier.wait(60)  # both writers have opened the file before either writes
    for r in rows:
        w.append(r)
        time.sleep(0.02)
    w.close()


def test_two_processes_writing_one_file_keep_every_row(tmp_path):
    import multiprocessing

    path = tmp_path / "c.parquet"
    rows = _rows(n_per=4)
    a = [r for r in rows if r["module"] == "matmul"]
    b = [r for r in rows if r["module"] == "activation"]
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_write_rows_in_process, args=(path, part, "dev-a", barrier)) for part in (a, b)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    df = read_dataset(path)
    assert sorted(df["config_key"]) == sorted(r["config_key"] for r in a + b)
    assert len(df.attrs["jaxlat"][0]["runs"]) == 2
    assert not (tmp_path / "c.parquet.journal.jsonl").exists()


def test_interleaved_writers_never_drop_each_others_rows(tmp_path):
    path = tmp_path / "c.parquet"
    rows = _rows()
    w1 = DatasetWriter(path, _meta(), flush_every=100)
    w2 = DatasetWriter(path, _meta(), flush_every=100)
    for r in rows[:5]:
        w1.append(r)
    for r in rows[5:10]:
        w2.append(r)
    w2.flush()  # writes w1's journaled rows too
    assert len(read_dataset(path)) == 10
    w1.append(rows[10])
    w1.close()  # must keep w2's rows, and leave the journal while w2 still writes
    w2.append(rows[11])
    w2.close()
    assert len(read_dataset(path)) == 12
    assert not w1.journal.exists()


def test_a_failed_row_never_replaces_an_ok_row(tmp_path):
    path = tmp_path / "c.parquet"
    ok = _rows()[0]
    cfg = profilers.config_from_row(ok)
    failed = measurement_row(cfg, samples_ms=None, number_per_run=None, backend="torch", device="cpu",
                             device_id="dev-a", error="boom")
    w1, w2 = DatasetWriter(path, _meta()), DatasetWriter(path, _meta())
    w1.append(ok)
    w1.close()
    w2.append(failed)
    w2.close()
    assert read_dataset(path, include_failed=True)["status"].tolist() == ["ok"]


def _stale_journal(tmp_path, **changes):
    path = tmp_path / "s.parquet"
    row = {**_rows()[0], **changes}
    (tmp_path / "s.parquet.journal.jsonl").write_text(json.dumps(row) + "\n")
    return path


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"device_id": "dev-b"}, "a row of device 'dev-b'; this run measures 'dev-a'"),
        ({"latency_ms_median": -5.0}, "latency_ms_median=-5.0 is not valid"),
        ({"latency_ms_p10": 1e30}, "latency_ms_p10=1e+30 is not valid"),
        ({"status": "maybe"}, "status='maybe' is unknown: expected one of ok, failed"),
        ({"config_key": "0123456789abcdef"}, "config_key='0123456789abcdef' is not its config's"),
        ({"batch_size": -3}, "batch_size=-3 is out of range"),
    ],
)
def test_a_stale_journal_is_checked_before_it_is_merged(tmp_path, changes, message):
    path = _stale_journal(tmp_path, **changes)
    with pytest.raises(DatasetError, match=re.escape(message)) as e:
        DatasetWriter(path, _meta())
    assert "s.parquet.journal.jsonl:1" in str(e.value)
    assert not path.exists()


def test_resume_with_other_timer_settings_is_refused_and_other_metadata_kept_per_run(tmp_path):
    path = tmp_path / "t.parquet"
    meta = {**_meta(), "timer": {"min_run_time_s": 0.2}, "libraries": {"torch": "2.0"}}
    with DatasetWriter(path, meta) as w:
        w.append(_rows()[0])
    before = path.read_bytes()
    with pytest.raises(DatasetError, match=r"timer=\{'min_run_time_s': 0.2\}; this run has timer="):
        DatasetWriter(path, {**meta, "timer": {"min_run_time_s": 0.01}})
    assert path.read_bytes() == before
    with DatasetWriter(path, {**meta, "libraries": {"torch": "2.1"}}) as w:
        w.append(_rows()[1])
    file_meta = read_dataset(path).attrs["jaxlat"][0]
    assert file_meta["libraries"] == {"torch": "2.0"}  # the file's, not overwritten
    assert file_meta["runs"][-1]["differs"] == {"libraries": {"torch": "2.1"}}


def test_unwritable_outputs_are_named(tmp_path):
    from profilers._dataset import check_output_path

    afile = tmp_path / "f"
    afile.write_text("x")
    with pytest.raises(DatasetError, match=f"{afile}/d.parquet: cannot write a dataset here"):
        DatasetWriter(afile / "d.parquet", _meta())
    with pytest.raises(DatasetError, match="is a directory"):
        check_output_path(tmp_path)


# -- dataset values -----------------------------------------------------------------------------


def _set(col, value, row=2, typ=None):
    def fn(table):
        vals = table.column(col).to_pylist()
        vals[row] = value
        idx = table.schema.get_field_index(col)
        return table.set_column(idx, col, pa.array(vals, typ or table.schema.field(col).type))

    return fn


def _first_of(module):
    rows = _rows()
    return next(i for i, r in enumerate(rows) if r["module"] == module)


@pytest.mark.parametrize(
    "table_fn, meta_fn, message",
    [
        (lambda t: t.drop_columns(["channels"]), None, "needs the field 'channels'"),
        (lambda t: _set("channels", -4, _first_of("add"))(t), None, "add.channels=-4 is out of range"),
        (lambda t: _set("kernel", 4, _first_of("conv2d"))(t), None, "conv2d.kernel=4 is not valid"),
        (lambda t: _set("groups", 7, _first_of("conv2d"))(t), None, "groups must divide cin and cout"),
        (lambda t: _set("cin", None, _first_of("conv2d"))(t), None, "needs the field 'cin'"),
        (_set("status", "maybe"), None, "unknown status values ['maybe']"),
        (_set("config_key", None), None, "1 rows have no config_key"),
        (_set("latency_ms_median", 1e30), None, "over 3.6e+06 ms latency_ms_median"),
        (_set("flops", -1.0), None, "negative flops"),
        (None, lambda m: {**m, "catalogue_version": 99}, "catalogue_version=99 is unknown"),
        (None, lambda m: {**m, "catalogue_version": "2"}, "catalogue_version='2' is unknown"),
    ],
)
def test_bad_values_in_datasets_are_named(tmp_path, table_fn, meta_fn, message):
    path = tmp_path / "d.parquet"
    write_dataset(path, _rows(), _meta())
    _rewrite(path, table_fn, meta_fn)
    with pytest.raises(DatasetError, match=re.escape(message)) as e:
        read_dataset(path)
    assert str(path) in str(e.value)


def test_duplicate_config_keys_are_refused(tmp_path):
    path = tmp_path / "d.parquet"
    rows = _rows()
    write_dataset(path, rows + [rows[0]], _meta())
    with pytest.raises(DatasetError, match=f"config_key '{rows[0]['config_key']}' appears more than once"):
        read_dataset(path)
