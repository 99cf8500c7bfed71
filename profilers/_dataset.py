"""The dataset format: one Parquet file per device run, one row per measured config.

Schema (version `SCHEMA_VERSION`): identity (`config_key`, `module`), the common inputs, every
catalogue field as its own column (null where a module type lacks it), analytic costs, the
latency statistics in milliseconds, the achieved utilization, `status` (`ok` or `failed`) with
`error`, where it ran, and what the backend ran (TFLite: the delegate and the converted graph's
operators). File-level metadata (key `jaxlat`, JSON): schema and catalogue
versions, backend, device id and fingerprint, library versions, the runs that wrote the file
(sampler, seed, command, time).

Writes are incremental and atomic: every row goes first to a journal (`<out>.journal.jsonl`,
flushed and fsynced per row), and the Parquet file is rewritten through a temporary file and
`os.replace` every few rows and at the end. A crash or Ctrl-C loses at most the config being
measured; the next run with the same `--out` reads both and skips what is done.

Several runs may write the same file at once: every read-merge-write of the file and journal
happens under an exclusive lock (`fcntl.flock` on `<out>.lock`, which stays next to the file),
and each rewrite merges what is on disk at that moment (the file and every writer's journaled
rows) with the writer's own rows, so no writer drops another's. A resumed file's rows, a
leftover journal and the run's settings are checked first: rows of another device, invalid
latencies, unknown statuses or invalid configs, and a timer, backend or device other than the
file's, are errors; other metadata that differs (library versions, the device descriptor) is
kept in the new run's entry (`runs[i]["differs"]`), never written over the file's.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._catalogue import (
    CATALOGUE_VERSION,
    COMMON_FIELDS,
    COST_COLUMNS,
    ModuleConfig,
    all_field_columns,
    config_from_row,
    get_spec,
    module_types,
    validate_config_columns,
)
from ._timer import summarize

_log = logging.getLogger("profilers")

#: Version of the dataset layout. Readers accept exactly the versions in `READABLE_SCHEMA_VERSIONS`.
#: Version 2 added the backend columns (`BACKEND_COLUMNS`); a version-1 file is read with them
#: null, and a resumed version-1 file is rewritten as version 2.
SCHEMA_VERSION = 2
READABLE_SCHEMA_VERSIONS = (1, 2)
METADATA_KEY = b"jaxlat"

LATENCY_COLUMNS = (
    "latency_ms_median",
    "latency_ms_mean",
    "latency_ms_std",
    "latency_ms_p10",
    "latency_ms_p90",
    "latency_ms_iqr",
)
_SPREAD_COLUMNS = ("latency_ms_std", "latency_ms_iqr")
MEASUREMENT_COLUMNS = LATENCY_COLUMNS + ("latency_cov", "n_repeats", "number_per_run", "utilization_achieved")
STATUS_COLUMNS = ("status", "error")
CONTEXT_COLUMNS = ("backend", "device", "device_id", "measured_at")
#: What the backend ran, null where it does not apply (torch): the TFLite `delegate` (`xnnpack`
#: or `none`), the converted graph's operators in execution order (`graph_ops`, `;`-joined) and
#: those beyond the module's intended operators (`graph_extra_ops`, empty when clean).
BACKEND_COLUMNS = ("delegate", "graph_ops", "graph_extra_ops")
IDENTITY_COLUMNS = ("config_key", "module")
REQUIRED_COLUMNS = (
    IDENTITY_COLUMNS
    + tuple(f.name for f in COMMON_FIELDS)
    + COST_COLUMNS
    + MEASUREMENT_COLUMNS
    + STATUS_COLUMNS
    + CONTEXT_COLUMNS
    + BACKEND_COLUMNS
)
STATUS_OK = "ok"
STATUS_FAILED = "failed"
STATUSES = (STATUS_OK, STATUS_FAILED)
#: Largest latency a row may hold (one hour per call): a larger value is a unit or parsing
#: error, not a measurement (a run times out long before).
MAX_LATENCY_MS = 3.6e6
#: Metadata a resumed or concurrently written file must share with the run: rows measured
#: with other timer settings, on another device or backend, are not the same measurements.
_MUST_MATCH = ("backend", "device", "device_id", "timer")
#: Metadata that is the file's, not any one run's.
_FILE_KEYS = ("schema_version", "catalogue_version", "runs", "created_at")


class DatasetError(ValueError):
    """A dataset file that cannot be used, with the reason."""


def measurement_row(
    cfg: ModuleConfig,
    *,
    samples_ms: Sequence[float] | None,
    number_per_run: int | None,
    backend: str,
    device: str,
    device_id: str,
    utilization_achieved: float | None = None,
    error: str | None = None,
    backend_columns: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One dataset row: the config, its costs, and either statistics or the error.

    `backend_columns` fills `BACKEND_COLUMNS` (the others stay null); anything else in it is an
    error, so a backend cannot add columns the schema does not know.
    """
    extra = dict(backend_columns or {})
    unknown = sorted(set(extra) - set(BACKEND_COLUMNS))
    if unknown:
        raise ValueError(f"backend_columns: {unknown} are not dataset columns; expected some of {list(BACKEND_COLUMNS)}")
    row: dict[str, Any] = {"config_key": cfg.key, **cfg.as_dict(), **cfg.costs().as_dict()}
    nan = math.nan
    if error is None and samples_ms:
        s = summarize(samples_ms)
        row.update(
            latency_ms_median=s.median_ms,
            latency_ms_mean=s.mean_ms,
            latency_ms_std=s.std_ms,
            latency_ms_p10=s.p10_ms,
            latency_ms_p90=s.p90_ms,
            latency_ms_iqr=s.iqr_ms,
            latency_cov=s.cov,
            n_repeats=s.n_repeats,
            number_per_run=int(number_per_run or 1),
            status=STATUS_OK,
            error=None,
        )
    else:
        row.update({c: nan for c in LATENCY_COLUMNS})
        row.update(
            latency_cov=nan,
            n_repeats=0,
            number_per_run=0,
            status=STATUS_FAILED,
            error=error or "no samples",
        )
    row.update(
        utilization_achieved=nan if utilization_achieved is None else float(utilization_achieved),
        backend=backend,
        device=device,
        device_id=device_id,
        measured_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    row.update({c: extra.get(c) for c in BACKEND_COLUMNS})
    return row


def _arrow_schema():
    import pyarrow as pa

    kind = {int: pa.int64(), float: pa.float64(), str: pa.string(), bool: pa.bool_()}
    cols = [("config_key", pa.string()), ("module", pa.string())]
    cols += [(f.name, kind[f.kind]) for f in COMMON_FIELDS]
    cols += [(f.name, kind[f.kind]) for f in all_field_columns()]
    cols += [(c, pa.float64()) for c in COST_COLUMNS]
    cols += [(c, pa.float64()) for c in LATENCY_COLUMNS + ("latency_cov",)]
    cols += [("n_repeats", pa.int64()), ("number_per_run", pa.int64()), ("utilization_achieved", pa.float64())]
    cols += [(c, pa.string()) for c in STATUS_COLUMNS + CONTEXT_COLUMNS + BACKEND_COLUMNS]
    return pa.schema(cols)


def write_dataset(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]], metadata: Mapping[str, Any]) -> None:
    """Write rows to `path` atomically (temporary file, fsync, `os.replace`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    schema = _arrow_schema()
    names = set(schema.names)
    rows = [{k: v for k, v in r.items() if k in names} for r in rows]
    meta = {"schema_version": SCHEMA_VERSION, "catalogue_version": CATALOGUE_VERSION, **metadata}
    table = pa.Table.from_pylist(rows, schema=schema)
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(meta).encode()})
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The `jaxlat` metadata of a dataset file.

    Raises:
      DatasetError: not a Parquet file, no jaxlat metadata, or an unknown schema version.
    """
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such dataset file")
    try:
        schema = pq.read_schema(path)
    except Exception as e:  # pyarrow raises several types for a broken file
        raise DatasetError(f"{path}: not a readable Parquet file ({e})") from None
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise DatasetError(f"{path}: no 'jaxlat' metadata; not a jaxlat dataset")
    try:
        meta = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: the 'jaxlat' metadata is not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise DatasetError(f"{path}: the 'jaxlat' metadata is a {type(meta).__name__}; expected a JSON object")
    version = meta.get("schema_version")
    if version not in READABLE_SCHEMA_VERSIONS:
        raise DatasetError(
            f"{path}: schema_version={version!r} is unknown; this version of profilers reads "
            f"{', '.join(map(str, READABLE_SCHEMA_VERSIONS))}"
        )
    catalogue = meta.get("catalogue_version")
    if isinstance(catalogue, bool) or not isinstance(catalogue, int) or not 1 <= catalogue <= CATALOGUE_VERSION:
        raise DatasetError(
            f"{path}: catalogue_version={catalogue!r} is unknown; this version of profilers reads "
            f"catalogue versions 1 to {CATALOGUE_VERSION} (a newer file needs a newer profilers)"
        )
    if not isinstance(meta.get("runs", []), list):
        raise DatasetError(f"{path}: metadata 'runs' is a {type(meta['runs']).__name__}; expected a list")
    return meta


def _read_frame(path: Path, schema_version: int):
    """The rows of a file, upgraded to the current schema (version-1 files gain the backend
    columns, null)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    mapping = {pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype(), pa.string(): pd.StringDtype()}
    df = pq.read_table(path).to_pandas(types_mapper=mapping.get)
    for col in BACKEND_COLUMNS if schema_version == 1 else ():
        if col not in df.columns:
            df[col] = pd.Series(pd.NA, index=df.index, dtype=pd.StringDtype())
    return df


def validate_frame(df, *, source: str = "dataset") -> None:
    """Check a dataset frame; `DatasetError` names `source`, the column, the value and the rule.

    Checked: every schema column present; module types registered; `status` `ok` or `failed`;
    `config_key` unique; each module type's configs (`validate_config_columns`: required fields
    with values, values of the right kind inside the catalogue's ranges and rules, rows labelled
    by `config_key`); in ok rows, latencies finite, > 0 and below `MAX_LATENCY_MS`, spreads
    finite and >= 0, analytic costs finite and >= 0.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DatasetError(f"{source}: missing columns {missing}")
    if df["module"].isna().any():
        raise DatasetError(f"{source}: {int(df['module'].isna().sum())} rows have no 'module'")
    modules = df["module"].astype(object).to_numpy()
    unknown = sorted({str(m) for m in modules} - set(module_types()))
    if unknown:
        raise DatasetError(
            f"{source}: unknown module types {unknown}; register them (profilers.register_module) before loading"
        )
    # Strings, or None where missing (a pandas NA does not compare to a string).
    status = np.array([v if isinstance(v, str) else None for v in df["status"].astype(object)], dtype=object)
    bad_status = sorted({str(v) for v in status if v not in STATUSES})
    if bad_status:
        raise DatasetError(f"{source}: unknown status values {bad_status}; expected one of {', '.join(STATUSES)}")
    keys = df["config_key"]
    if keys.isna().any():
        raise DatasetError(f"{source}: {int(keys.isna().sum())} rows have no config_key")
    dup = keys[keys.duplicated()]
    if len(dup):
        raise DatasetError(
            f"{source}: config_key {dup.iloc[0]!r} appears more than once ({len(dup)} duplicate rows); "
            "each config is one row"
        )
    for module in sorted(set(modules)):
        sel = modules == module
        sub = df.loc[sel]
        spec = get_spec(module)
        cols = {f.name: sub[f.name] for f in spec.all_fields if f.name in sub.columns}
        try:
            validate_config_columns(module, cols, source=source, labels=sub["config_key"].to_numpy())
        except ValueError as e:
            raise DatasetError(str(e)) from None
    ok = df[status == STATUS_OK]
    for col in LATENCY_COLUMNS + COST_COLUMNS:
        try:
            vals = ok[col].to_numpy(dtype=np.float64, na_value=np.nan)
        except (ValueError, TypeError):
            raise DatasetError(f"{source}: column {col} holds non-numbers; expected latencies/costs as numbers") from None
        # A spread (std, IQR) or a cost may be 0 (identical samples, no weights); a latency may not.
        zero_ok = col in _SPREAD_COLUMNS or col in COST_COLUMNS
        finite = np.isfinite(vals)
        low = np.zeros_like(finite)
        low[finite] = (vals[finite] < 0) if zero_ok else (vals[finite] <= 0)
        high = np.zeros_like(finite)
        if col in LATENCY_COLUMNS:
            high[finite] = vals[finite] > MAX_LATENCY_MS
        bad = ~finite | low | high
        if bad.any():
            first = int(np.argmax(bad))
            kinds = []
            if np.isnan(vals).any():
                kinds.append("NaN")
            if np.isinf(vals).any():
                kinds.append("inf")
            if low.any():
                kinds.append("negative" if zero_ok else "non-positive")
            if high.any():
                kinds.append(f"over {MAX_LATENCY_MS:g} ms")
            rule = ("costs must be finite and >= 0" if col in COST_COLUMNS else
                    f"latencies must be finite, > 0 and <= {MAX_LATENCY_MS:g} ms, spreads finite and >= 0")
            raise DatasetError(
                f"{source}: {int(bad.sum())} ok rows have {'/'.join(kinds)} {col} "
                f"(first config_key {ok['config_key'].iloc[first]}, {col}={vals[first]!r}); {rule}"
            )


def read_dataset(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    allow_mixed_devices: bool = False,
    include_failed: bool = False,
):
    """Load and check one or more dataset files into one pandas DataFrame.

    Args:
      paths: a file or a list of files.
      allow_mixed_devices: accept rows from different devices (by `device_id`); otherwise
        mixing them is an error, since a predictor learns one device.
      include_failed: keep rows with `status == "failed"` (dropped by default).

    Returns:
      The rows; `df.attrs["jaxlat"]` holds each file's metadata.

    Raises:
      DatasetError: an unreadable file, unknown schema version, missing columns, unknown
        module types, NaN/inf/non-positive latencies in ok rows, or mixed devices.
    """
    import pandas as pd

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not paths:
        raise DatasetError("read_dataset: no dataset paths given")
    frames, metas, per_file = [], [], {}
    for p in map(Path, paths):
        meta = read_metadata(p)
        df = _read_frame(p, meta["schema_version"])
        validate_frame(df, source=str(p))
        rows_dev = {str(d) for d in df["device_id"].dropna().unique()}
        if meta.get("device_id") is not None and rows_dev - {meta["device_id"]}:
            raise DatasetError(
                f"{p}: rows of device(s) {sorted(rows_dev - {meta['device_id']})} in a file of device "
                f"{meta['device_id']!r}; a file holds one device's measurements"
            )
        frames.append(df)
        metas.append(meta)
        per_file[str(p)] = sorted(rows_dev | ({meta["device_id"]} if meta.get("device_id") is not None else set()))
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    devices = sorted({d for ds in per_file.values() for d in ds})
    if len(devices) > 1 and not allow_mixed_devices:
        files = "; ".join(f"{f}: {', '.join(ds)}" for f, ds in per_file.items())
        raise DatasetError(
            f"datasets from {len(devices)} different devices {devices} are mixed ({files}); pass "
            "allow_mixed_devices=True (--allow-mixed-devices) if that is intended"
        )
    if not include_failed:
        df = df[df["status"] == STATUS_OK].reset_index(drop=True)
    df.attrs["jaxlat"] = metas
    return df


class DatasetWriter:
    """Incremental, crash-safe writer for one dataset file; the unit of resumption.

    Opening a path that already holds a dataset (or a journal left by a crash) loads its rows,
    so `done_keys()` tells a resumed run what to skip. Those rows and the file's settings are
    checked first (see the module docstring): a file measured on another device, with another
    timer or backend, or a journal holding invalid rows, is refused rather than mixed.

    Several writers (processes) may write one path at once: each holds `<path>.lock`
    (`fcntl.flock`) while it touches the file or the journal, and each rewrite merges the file
    and the journal as they are then with its own rows. For a config measured by two writers,
    the later row wins, except that a failed row never replaces an ok one.

    Raises:
      DatasetError: the path cannot be written (a parent that is a file, no permission), or
        the existing file or journal cannot be resumed; the message names the path.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        metadata: Mapping[str, Any],
        *,
        flush_every: int = 50,
        flush_s: float = 30.0,
    ):
        self.path = Path(path)
        self.journal = self.path.with_name(self.path.name + ".journal.jsonl")
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.flush_every, self.flush_s = flush_every, flush_s
        self._meta = dict(metadata)
        # A run entry is recognized in the merged file by its id, whoever writes the file.
        self._runs = [{**r, "run_id": r.get("run_id") or uuid.uuid4().hex[:16]}
                      for r in self._meta.pop("runs", [])]
        self._lock_fd = _open_lock(self.path, self.lock_path)
        self._journal_f = None
        self._rows: dict[str, dict[str, Any]] = {}  # everything known to be in the file or journal
        self._own: dict[str, dict[str, Any]] = {}  # rows this writer appended since its last flush
        self._partials: dict[str, dict[int, dict[str, Any]]] = {}
        self.recovered = 0
        try:
            with self._locked():
                disk_rows, disk_meta = self._read_file()
                if disk_meta is not None:
                    self._check_meta(disk_meta, str(self.path))
                self._rows.update(disk_rows)
                rows, partials = _read_journal_checked(self.journal, self._meta.get("device_id"))
                self._ensure_newline()  # only once the journal is accepted: an error changes no file
                for rec in rows:
                    _merge_row(self._rows, rec)
                self.recovered = len(rows)
                for key, recs in partials.items():
                    if key not in self._rows:
                        self._partials[key] = recs
                self._journal_f = self._open_journal()
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._pending = 0
        self._last_flush = time.monotonic()

    # -- locking and files ------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _open_journal(self):
        try:
            return open(self.journal, "a", encoding="utf-8")
        except OSError as e:
            raise DatasetError(f"{self.journal}: cannot write the journal ({e.strerror or e})") from None

    def _ensure_newline(self) -> None:
        """A line torn by a crash must not swallow the next writer's line."""
        try:
            with open(self.journal, "rb+") as f:
                f.seek(0, os.SEEK_END)
                if f.tell() == 0:
                    return
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")
        except FileNotFoundError:
            return

    def _journal_current(self) -> None:
        """Re-open the journal if another writer removed it (under the lock)."""
        try:
            same = os.stat(self.journal).st_ino == os.fstat(self._journal_f.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            self._journal_f.close()
            self._journal_f = self._open_journal()

    def _read_file(self) -> tuple[dict[str, dict[str, Any]], dict[str, Any] | None]:
        if not self.path.exists():
            return {}, None
        meta = read_metadata(self.path)
        df = _read_frame(self.path, meta["schema_version"])
        validate_frame(df, source=str(self.path))
        rows = {r["config_key"]: {k: _plain(v) for k, v in r.items()} for r in df.to_dict("records")}
        return rows, meta

    def _check_meta(self, disk: Mapping[str, Any], source: str) -> None:
        for key in _MUST_MATCH:
            if key in disk and key in self._meta and disk[key] != self._meta[key]:
                if key == "device_id":
                    raise DatasetError(
                        f"{source} holds measurements of device {disk[key]!r}; this run "
                        f"measures {self._meta[key]!r}; write to another --out"
                    )
                raise DatasetError(
                    f"{source} was measured with {key}={disk[key]!r}; this run has {key}={self._meta[key]!r}. "
                    f"Rows measured otherwise do not belong in one file: resume with the same settings, "
                    f"or write to another --out"
                )

    def _merged_meta(self, disk: Mapping[str, Any] | None) -> dict[str, Any]:
        """The file's metadata with this writer's run entries added: the file's own values are
        kept; this run's values that differ are recorded in its run entries."""
        if disk is None:
            return {**self._meta, "runs": list(self._runs)}
        meta = {k: v for k, v in disk.items() if k not in ("schema_version", "catalogue_version")}
        differs = {k: v for k, v in self._meta.items()
                   if k not in _FILE_KEYS and k in disk and disk[k] != v}
        for k, v in self._meta.items():
            meta.setdefault(k, v)
        # This writer's own run entries are authoritative (they may have been annotated since).
        mine = {r["run_id"]: r for r in self._runs}
        runs = [{**r, **mine[r["run_id"]]} if isinstance(r, dict) and r.get("run_id") in mine else r
                for r in disk.get("runs", [])]
        have = {r.get("run_id") for r in runs if isinstance(r, dict)}
        for r in self._runs:
            if r["run_id"] not in have:
                runs.append({**r, "differs": differs} if differs else r)
        meta["runs"] = runs
        return meta

    # -- the writer's interface -------------------------------------------------------------

    def done_keys(self, *, include_failed: bool = True) -> set[str]:
        return {k for k, r in self._rows.items() if include_failed or r.get("status") == STATUS_OK}

    def rows(self) -> list[dict[str, Any]]:
        return list(self._rows.values())

    def partials(self, key: str) -> dict[int, dict[str, Any]]:
        """Rounds already measured for a config that is not complete yet (round -> record)."""
        return {r: {k: v for k, v in rec.items() if k not in ("config_key", "partial_round")}
                for r, rec in self._partials.get(key, {}).items()}

    def _journal_line(self, obj: Mapping[str, Any]) -> None:
        with self._locked():
            self._journal_current()
            self._write_line(obj)

    def _write_line(self, obj: Mapping[str, Any]) -> None:
        self._journal_f.write(json.dumps(obj) + "\n")
        self._journal_f.flush()
        os.fsync(self._journal_f.fileno())

    def append_partial(self, key: str, round_index: int, record: Mapping[str, Any]) -> None:
        """Record one measured round of a config durably (multi-round runs)."""
        rec = {"config_key": key, "partial_round": int(round_index), **record}
        self._journal_line(rec)
        self._partials.setdefault(key, {})[int(round_index)] = rec

    def append(self, row: Mapping[str, Any]) -> None:
        """Record one row durably (journal + fsync); rewrite the Parquet file now and then."""
        row = dict(row)
        self._journal_line(row)
        _merge_row(self._rows, row)
        self._own[row["config_key"]] = row
        self._partials.pop(row["config_key"], None)
        self._pending += 1
        if self._pending >= self.flush_every or time.monotonic() - self._last_flush > self.flush_s:
            self.flush()

    def annotate_run(self, info: Mapping[str, Any]) -> None:
        """Add `info` to this writer's run entry in the metadata (written at the next flush),
        e.g. the run's test-retest agreement."""
        if not self._runs:
            raise ValueError(f"{self.path}: this writer has no run entry to annotate")
        self._runs[-1] = {**self._runs[-1], **dict(info)}

    def flush(self) -> None:
        """Rewrite the Parquet file atomically with every row on disk and this writer's own;
        keep in the journal only rounds of configs still in progress (any writer's)."""
        with self._locked():
            rows, disk_meta = self._read_file()
            if disk_meta is not None:
                self._check_meta(disk_meta, str(self.path))
            journal_rows, journal_partials = _read_journal_lines(self.journal)
            for rec in journal_rows:
                _merge_row(rows, rec)
            for rec in self._own.values():  # also when a torn line swallowed our journal line
                _merge_row(rows, rec)
            write_dataset(self.path, rows.values(), self._merged_meta(disk_meta))
            # Rows now in the Parquet file; a crash before this truncation only duplicates them
            # in the journal, and duplicates collapse by config_key on the next open.
            self._journal_current()
            keep = {k: recs for k, recs in journal_partials.items() if k not in rows}
            for k, recs in self._partials.items():
                if k not in rows:
                    keep.setdefault(k, {}).update(recs)
            self._journal_f.truncate(0)
            self._journal_f.seek(0)
            for recs in keep.values():
                for rec in recs.values():
                    self._write_line(rec)
            self._rows = rows
            self._own.clear()
        self._pending = 0
        self._last_flush = time.monotonic()

    def close(self) -> None:
        if self._journal_f is None or self._journal_f.closed:
            return
        self.flush()
        with self._locked():
            self._journal_f.close()
            # Another writer may still be journaling: the journal goes only when it is empty.
            with contextlib.suppress(FileNotFoundError):
                if self.journal.stat().st_size == 0:
                    self.journal.unlink()
        os.close(self._lock_fd)

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_lock(path: Path, lock_path: Path) -> int:
    """The lock file's descriptor, creating the directories; `DatasetError` naming the path
    when it cannot be written there."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise DatasetError(f"{path} is a directory; expected a dataset file path (.parquet)")
        return os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise DatasetError(f"{path}: cannot write a dataset here ({e.strerror or e}: {e.filename or path})") from None


def check_output_path(path: str | os.PathLike) -> Path:
    """Check that a dataset can be written at `path` (creating its directory), before a run.

    Raises:
      DatasetError: the parent is a file, not writable, or `path` is a directory.
    """
    path = Path(path)
    os.close(_open_lock(path, path.with_name(path.name + ".lock")))
    return path


def _merge_row(rows: dict[str, dict[str, Any]], row: Mapping[str, Any]) -> None:
    """Put `row` in `rows` by config_key: the later wins, but a failed row never replaces an
    ok one (two writers measured it; one failed)."""
    old = rows.get(row["config_key"])
    if old is not None and old.get("status") == STATUS_OK and row.get("status") != STATUS_OK:
        return
    rows[row["config_key"]] = dict(row)


def _plain(v: Any) -> Any:
    """pandas/numpy scalars (and NA) to plain Python values for JSON and pyarrow."""
    if v is None:
        return None
    try:
        import pandas as pd

        if v is pd.NA:
            return None
    except ImportError:
        pass
    if isinstance(v, np.generic):
        return v.item()
    return v


def _read_journal(path: Path) -> list[dict[str, Any]]:
    """Every decodable record of a journal, in order (rows and partial rounds)."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                # A line torn by a crash mid-write: that config is measured again.
                continue
    return rows


def _read_journal_lines(path: Path) -> tuple[list[dict[str, Any]], dict[str, dict[int, dict[str, Any]]]]:
    """`(rows, partial rounds by config_key)` of a journal; none when there is none."""
    if not path.exists():
        return [], {}
    rows, partials = [], {}
    for rec in _read_journal(path):
        if not isinstance(rec, dict):
            continue
        if "partial_round" in rec:
            partials.setdefault(rec.get("config_key"), {})[int(rec["partial_round"])] = rec
        else:
            rows.append(rec)
    return rows, partials


def _read_journal_checked(
    path: Path, device_id: str | None
) -> tuple[list[dict[str, Any]], dict[str, dict[int, dict[str, Any]]]]:
    """A leftover journal's rows and rounds, each checked as a dataset row would be.

    Raises:
      DatasetError: naming the journal, the line and the problem (another device, an unknown
        status or module, an invalid config or latency, a config_key that is not its config's).
    """
    if not path.exists():
        return [], {}
    rows: list[dict[str, Any]] = []
    partials: dict[str, dict[int, dict[str, Any]]] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    torn = 0
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{i}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            torn += 1  # a line torn by a crash mid-write: that config is measured again
            continue
        if not isinstance(rec, dict) or not isinstance(rec.get("config_key"), str):
            raise DatasetError(f"{where}: not a journal record (expected an object with a config_key); "
                               f"the journal is not this file's: move it away")
        hint = "; the journal is left from another run: move it away or write to another --out"
        if "partial_round" in rec:
            _check_partial(rec, where + hint)
            partials.setdefault(rec["config_key"], {})[int(rec["partial_round"])] = rec
            continue
        _check_journal_row(rec, device_id, where, hint)
        rows.append(rec)
    if torn:
        _log.warning("%s: %d torn line(s) skipped (a crash mid-write); those configs are measured again", path, torn)
    return rows, partials


def _check_journal_row(rec: Mapping[str, Any], device_id: str | None, where: str, hint: str) -> None:
    if device_id is not None and rec.get("device_id") != device_id:
        raise DatasetError(f"{where}: a row of device {rec.get('device_id')!r}; this run measures {device_id!r}{hint}")
    status = rec.get("status")
    if status not in STATUSES:
        raise DatasetError(f"{where}: status={status!r} is unknown: expected one of {', '.join(STATUSES)}{hint}")
    try:
        cfg = config_from_row(rec, strict=True, source=where)
    except ValueError as e:
        raise DatasetError(f"{e}{hint}") from None
    if cfg.key != rec["config_key"]:
        raise DatasetError(f"{where}: config_key={rec['config_key']!r} is not its config's ({cfg.key}){hint}")
    own = {f.name for f in cfg.spec.all_fields}
    foreign = [f.name for f in all_field_columns() if f.name not in own and rec.get(f.name) is not None]
    if foreign:
        raise DatasetError(f"{where}: {foreign[0]}={rec[foreign[0]]!r} is not a field of {cfg.module}{hint}")
    import pyarrow as pa

    schema = _arrow_schema()
    try:
        pa.Table.from_pylist([{k: v for k, v in rec.items() if k in schema.names}], schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError) as e:
        raise DatasetError(f"{where}: a value does not fit the dataset schema ({e}){hint}") from None
    if status != STATUS_OK:
        return
    for col in LATENCY_COLUMNS:
        v = rec.get(col)
        spread = col in _SPREAD_COLUMNS
        ok = (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
              and (v >= 0 if spread else v > 0) and v <= MAX_LATENCY_MS)
        if not ok:
            rule = "finite and >= 0" if spread else f"finite, > 0 and <= {MAX_LATENCY_MS:g} ms"
            raise DatasetError(f"{where}: {col}={v!r} is not valid: expected {rule}{hint}")


def _check_partial(rec: Mapping[str, Any], where: str) -> None:
    r = rec.get("partial_round")
    samples = rec.get("samples_ms")
    if isinstance(r, bool) or not isinstance(r, int) or r < 0:
        raise DatasetError(f"{where}: partial_round={r!r} is not valid: expected an int >= 0")
    if not isinstance(samples, list) or not samples or not all(
        isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and 0 < x <= MAX_LATENCY_MS
        for x in samples
    ):
        raise DatasetError(f"{where}: samples_ms is not a list of finite latencies in (0, {MAX_LATENCY_MS:g}] ms")
