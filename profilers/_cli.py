"""`jaxlat-profile`: measure modules into a dataset (torch; TFLite through LiteRT), list the
catalogue, summarize datasets.

Examples:
  jaxlat-profile torch --module conv2d --n 500 --device cpu --threads 1 --utilization 0,0.5 --out data/cpu.parquet
  jaxlat-profile torch --module all --n 50 --n conv2d=200 --range kernel=1,3 --out data/small.parquet
  jaxlat-profile torch-model --model profilers.zoo:resnet50 --input-shape 1,3,224,224 --out arch.json
  jaxlat-profile zoo --model resnet18,vit_b16 --batch 1,8 --out runs/zoo.jsonl
  jaxlat-profile generated --n 48 --batch 1,8 --out data/cpu_generated_models.jsonl
  jaxlat-profile torch --from-archs runs/pool.jsonl --n 2000 --out data/cpu_arch_modules.parquet
  jaxlat-profile tflite-export --module all --n 300 --dtype fp32,fp16w,int8 --models models/ --jobs 2
  jaxlat-profile tflite-run --models models/ --threads 1 --delegate xnnpack --out data/tflite.parquet
  jaxlat-profile tflite --module conv2d --n 100 --out data/tflite_conv.parquet
  jaxlat-profile tflite-model --model profilers.zoo:mobilenet_v2 --input-shape 1,3,224,224 --out mbv2_tflite.json
  jaxlat-profile zoo --model resnet18 --backend tflite --tflite-dtype int8 --out runs/zoo_tflite.jsonl
  jaxlat-profile catalogue --module conv2d
  jaxlat-profile summary data/cpu.parquet
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._catalogue import COMMON_FIELDS, get_spec, module_types
from ._samplers import METHODS, expand, parse_range, sample_configs
from ._timer import TimerConfig

_log = logging.getLogger("profilers.cli")


# -- conventions shared by both commands (jaxlat._cli uses them too) -------------------------


class CommandError(ValueError):
    """A usage error found after parsing (options that exclude each other, a missing input)."""


#: What a user's input can raise; `run_main` reports it in one line with exit status 2.
USER_ERRORS = (ValueError, OSError, ImportError)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """`--help` shows every option's default (lists comma-separated), and keeps the examples'
    line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or not action.option_strings
            or action.nargs == 0
            or default is None
            or default is False
            or default == argparse.SUPPRESS
        ):
            return text
        shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


def csv_list(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    """An argparse `type`: a comma-separated list of `kind` (use with `action="extend"` or
    `ListAction`, so that the option may also be repeated)."""

    def parse(text: str) -> list[Any]:
        try:
            return [kind(t.strip()) for t in text.split(",") if t.strip()]
        except ValueError:
            name = getattr(kind, "__name__", "value")
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of {name}") from None

    parse.__name__ = f"list of {getattr(kind, '__name__', 'value')}"
    return parse


class ListAction(argparse.Action):
    """A list option that is comma-separated and may be repeated; given at all, it replaces the
    default (`--threads 1,2 --threads 4` is [1, 2, 4])."""

    def __call__(self, parser, namespace, values, option_string=None):
        current = getattr(namespace, self.dest, None)
        if current is None or current is self.default:
            current = []
        setattr(namespace, self.dest, [*current, *values])


def existing_file(text: str) -> str:
    """An argparse `type`: a path that exists and is a file."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"no such file: {text!r}")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"not a file: {text!r}")
    return text


def check_output_file(path: str, option: str) -> None:
    """Check, before the work, that a file can be written at `path`: not a directory, no file
    on the way, a writable place (a probe file in the nearest existing directory, removed).
    Nothing is created."""
    p = Path(path)
    if p.is_dir():
        raise CommandError(f"{option} {path}: is a directory; expected a file path")
    existing = p.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise CommandError(f"{option} {path}: {existing} is a file, not a directory")
    probe = existing / f".write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise CommandError(f"{option} {path}: cannot write here ({e.strerror or e})") from None


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        return f"{e.filename}: {e.strerror}"
    if isinstance(e, ImportError) and not str(e).startswith(("reading", "measuring")):
        return f"{e} (an optional dependency is missing: see the README's install section)"
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()] or [type(e).__name__]
    return lines[0] + (" (--debug for the whole message)" if len(lines) > 1 else "")


def run_main(parser: argparse.ArgumentParser, argv: Sequence[str] | None, *, prog: str) -> int:
    """Parse, set up logging (`-v`, `-q`), run the command; a user's error ends in one line
    `PROG: error: ...` and exit status 2 (the traceback with `--debug`), Ctrl-C in 130."""
    from ._quiet import configure_logging

    args = parser.parse_args(argv)
    configure_logging(-1 if getattr(args, "quiet", False) else getattr(args, "verbose", 0))
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the interpreter's final flush does not fail again
        return 141
    except USER_ERRORS as e:
        if getattr(args, "debug", False):
            raise
        print(f"{prog}: error: {_one_line(e)}", file=sys.stderr)
        return 2


def output_options() -> argparse.ArgumentParser:
    """The options every command takes: -v, -q, --debug (a parent parser)."""
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("output")
    g.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more detail: DEBUG messages and third-party library warnings",
    )
    g.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    g.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return common


_csv = csv_list


def _modules(values: Sequence[str]) -> list[str]:
    names: list[str] = []
    for v in values:
        for name in v.split(","):
            name = name.strip()
            if name == "all":
                names.extend(module_types())
            elif name:
                get_spec(name)  # raises with the known names
                names.append(name)
    return list(dict.fromkeys(names))


def count(value: Any, *, name: str = "--n", allowed: str = "") -> int:
    """`value` (an int, or its text from the command line) if it is a whole number >= 1, else a
    `ValueError` naming the option, the value and what is allowed; 0 never means "the default"."""
    try:
        n = int(value, 10) if isinstance(value, str) else value
    except ValueError:
        n = value
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{name}={n!r} is not valid: expected a whole number >= 1{allowed}")
    return n


def _counts(values: Sequence[str], modules: Sequence[str]) -> dict[str, int]:
    allowed = " (--n N for every module type, or --n MODULE=N for one)"
    default, per = None, {}
    for v in values:
        if "=" in v:
            name, n = (t.strip() for t in v.split("=", 1))
            get_spec(name)
            if name not in modules:
                raise ValueError(
                    f"--n {v}: {name} is not among the module types to profile ({', '.join(modules)}); "
                    "add it to --module, or drop the count"
                )
            per[name] = count(n, name=f"--n {name}", allowed=allowed)
        else:
            default = count(v.strip(), allowed=allowed)
    if default is None and set(modules) - set(per):
        raise ValueError("--n: give a default count (e.g. --n 300) or one per module (--n conv2d=1000)")
    return {m: per.get(m, default) for m in modules}


def _ranges(values: Sequence[str], modules: Sequence[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {m: {} for m in modules}
    for v in values:
        if "=" not in v:
            raise ValueError(f"--range {v!r}: expected FIELD=SPEC or MODULE.FIELD=SPEC")
        lhs, spec_text = v.split("=", 1)
        target, field = lhs.split(".", 1) if "." in lhs else (None, lhs)
        hit = False
        for m in modules if target is None else [target]:
            spec = get_spec(m)
            if any(f.name == field for f in spec.all_fields):
                try:
                    out.setdefault(m, {})[field] = parse_range(spec.field(field), spec_text)
                except ValueError as e:
                    raise ValueError(f"--range {v!r}: {e}") from None
                hit = True
        if not hit:
            raise ValueError(f"--range {v!r}: no selected module has a field {field!r}")
    return out


def _import_plugins(names: Sequence[str] | None) -> list[str]:
    import importlib

    for name in names or []:
        try:
            importlib.import_module(name)
        except ImportError as e:  # not "an optional dependency is missing": the user named it
            raise ValueError(
                f"--plugin {name!r}: cannot import it ({e}); expected an importable module"
            ) from e
    return list(names or [])


def _cmd_torch(args: argparse.Namespace) -> int:
    bad = [d for d in args.dtype if d not in _TORCH_DTYPES]
    if bad:
        raise ValueError(
            f"--dtype {bad[0]!r} is not valid for torch: expected one of {', '.join(_TORCH_DTYPES)} "
            "(fp16w and int8 are TFLite precisions: jaxlat-profile tflite)"
        )
    plugins = _import_plugins(args.plugin)
    configs, info, expand_batch = _wanted_configs(args, "torch")
    return _profile_configs(args, configs, plugins, info, expand_batch=expand_batch)


_TORCH_DTYPES = ("fp32", "fp16", "bf16")


def _wanted_configs(args: argparse.Namespace, command: str) -> tuple[list, dict[str, Any], bool]:
    """Module configs from `--module` sampling or `--from-archs` records; the run info to
    record; whether `--batch` still applies (records carry their own batch sizes)."""
    if args.from_archs:
        return _arch_configs(args), {"from_archs": args.from_archs}, False
    if not args.module:
        raise ValueError(f"{command}: give --module (types to sample) or --from-archs (architecture records)")
    return _sampled_configs(args), {"sampler": args.sampler}, True


def _sampled_configs(args: argparse.Namespace) -> list:
    modules = _modules(args.module)
    counts = _counts(args.n or ["100"], modules)
    ranges = _ranges(args.range or [], modules)
    if args.family:
        known = sorted({f for m in modules for f in get_spec(m).families})
        bad = [f for f in args.family if f not in known]
        if bad:
            raise ValueError(
                f"--family {bad[0]!r} is not valid: the sampling families of {', '.join(modules)} are "
                f"{', '.join(known)} (see `jaxlat-profile catalogue`)"
            )
    configs = []
    for i, m in enumerate(modules):
        fams = None
        if args.family:
            fams = [f for f in args.family if f in get_spec(m).families] or None
        configs += sample_configs(
            m,
            counts[m],
            method=args.sampler,
            seed=args.seed + i,
            ranges=ranges.get(m),
            families=fams,
            max_flops=None if args.max_gflops is None else args.max_gflops * 1e9,
        )
    return configs


def _arch_configs(args: argparse.Namespace) -> list:
    """The distinct module configs of architecture records, optionally a seeded subset."""
    import random

    from ._arch import load_records, unique_configs

    records = [r for f in args.from_archs for r in load_records(f)]
    configs = unique_configs(records)
    if args.module:
        keep = set(_modules(args.module))
        configs = [c for c in configs if c.module in keep]
    if args.max_gflops is not None:
        configs = [c for c in configs if c.costs().flops <= args.max_gflops * 1e9]
    if args.n and (len(args.n) > 1 or "=" in args.n[0]):
        raise ValueError(
            f"--n {' --n '.join(args.n)}: with --from-archs, --n takes one count N (a seeded subset "
            "of the records' distinct module configs); per-module counts are for sampling (--module)"
        )
    n = count(args.n[0]) if args.n else len(configs)
    if n < len(configs):
        configs = random.Random(args.seed).sample(configs, n)
    _log.info("%d distinct module configs from %d architecture records", len(configs), len(records))
    return configs  # batch sizes come from the records; threads, dtype and utilization from the options


#: The profiling protocols of `--protocol` (explicit `--rounds`, `--min-run-time` or
#: `--chunk-size` override a preset's value). `spread`: five rounds of 0.05 s, round-robin over
#: all configs of the run (a chunk size of 0 here), so that a config's rounds lie a minute or
#: more apart; its pooled 10th percentile is the label that repeats on a shared machine
#: (`benchmarks/results/label_repeat.md`: 0.896 of 308 configs within ±10 % 30 minutes later,
#: against 0.45 for one 0.1 s window; 0.54 in a second run whose machine slowed 19 % between
#: the passes). `single`: one window of 0.2 s, a third of the time.
PROTOCOLS: dict[str, dict[str, Any]] = {
    "spread": {"rounds": 5, "min_run_time": 0.25, "chunk_size": 0},
    "single": {"rounds": 1, "min_run_time": 0.2, "chunk_size": 8},
}


def _profile_configs(
    args: argparse.Namespace,
    configs: list,
    plugins: list[str],
    info: dict[str, Any],
    expand_batch: bool = False,
    backend: str = "torch",
    worker_args: Sequence[str] = (),
    settings: dict[str, Any] | None = None,
) -> int:
    from ._runner import run_profile

    check_output_file(args.out, "--out")  # now, not when the first row is written
    modules = sorted({c.module for c in configs})
    if settings is None:
        settings = {"dtype": args.dtype, "threads": args.threads, "utilization": args.utilization}
        if expand_batch:
            settings["batch_size"] = args.batch
    configs = expand(configs, **settings)
    preset = PROTOCOLS[args.protocol]
    rounds = preset["rounds"] if args.rounds is None else args.rounds
    min_run_time = preset["min_run_time"] if args.min_run_time is None else args.min_run_time
    chunk_size = (preset["chunk_size"] or len(configs)) if args.chunk_size is None else args.chunk_size
    timer = TimerConfig(min_run_time_s=min_run_time, min_repeats=args.min_repeats)
    device = getattr(args, "device", "cpu")
    _log.info(
        "profiling %d configs of %d module types with %s on %s -> %s",
        len(configs),
        len(modules),
        backend,
        device,
        args.out,
    )
    summary = run_profile(
        configs,
        args.out,
        backend=backend,
        worker_args=worker_args,
        device=device,
        timer=timer,
        timeout_s=args.timeout,
        load_workers=args.load_workers,
        retry_failed=args.retry_failed,
        plugins=plugins,
        rounds=rounds,
        chunk_size=chunk_size,
        retest=getattr(args, "retest", None),
        progress=not args.no_progress,
        run_info={
            **info,
            "protocol": args.protocol,
            "seed": getattr(args, "seed", None),
            "command": shlex.join(["jaxlat-profile", *sys.argv[1:]]),
        },
    )
    print(summary.format())
    return 130 if summary.interrupted else 0


def _tflite_export_configs(args: argparse.Namespace) -> set[str]:
    """Sample (or read from records) and export; returns the export keys of the configs."""
    from ._tflite_backend import TFLITE_DTYPES, describe_manifest, export_key
    from ._tflite_export import export_modules

    bad = [d for d in args.dtype if d not in TFLITE_DTYPES]
    if bad:
        raise ValueError(
            f"--dtype {bad[0]!r} is not valid for TFLite: expected one of {', '.join(TFLITE_DTYPES)}"
        )
    plugins = _import_plugins(args.plugin)
    configs, _, expand_batch = _wanted_configs(args, args.command)
    settings = {"dtype": args.dtype, **({"batch_size": args.batch} if expand_batch else {})}
    configs = expand(configs, **settings)
    _log.info("exporting %d configs to %s", len(configs), args.models)
    summary = export_modules(
        configs,
        args.models,
        jobs=args.jobs,
        retry_failed=args.retry_failed,
        progress=not args.no_progress,
        plugins=plugins,
    )
    print(summary.format())
    print(describe_manifest(args.models))
    if summary.interrupted:
        raise KeyboardInterrupt
    return {export_key(c) for c in configs}


def _cmd_tflite_export(args: argparse.Namespace) -> int:
    try:
        _tflite_export_configs(args)
    except KeyboardInterrupt:
        return 130
    return 0


def _cmd_tflite_run(args: argparse.Namespace, keys: set[str] | None = None) -> int:
    from ._tflite_backend import load_manifest, manifest_configs

    n = None if getattr(args, "n", None) is None else count(args.n)
    entries = load_manifest(args.models)
    if keys is not None:
        entries = {k: e for k, e in entries.items() if k in keys}
    if args.module:
        keep = set(_modules(args.module))
        entries = {k: e for k, e in entries.items() if e.config.module in keep}
    if args.dtype:
        entries = {k: e for k, e in entries.items() if e.config["dtype"] in args.dtype}
    if n is not None:
        entries = _subset(entries, n, getattr(args, "seed", 0) or 0)
    if not entries:
        raise ValueError(f"--models {args.models}: no exported models match the --module/--dtype filters")
    configs = manifest_configs(entries, threads=args.threads, utilization=args.utilization)
    plugins = _import_plugins(args.plugin)
    return _profile_configs(
        args,
        configs,
        plugins,
        {"models": str(args.models), "delegate": args.delegate},
        backend="tflite",
        worker_args=["--models", str(args.models), "--delegate", args.delegate],
        settings={},
    )


def _subset(entries: dict, n: int, seed: int) -> dict:
    """At most `n` models per module type and dtype, a seeded sample (the same configs in every
    dtype, so that precisions compare on equal configs)."""
    import random

    by_type: dict[str, list[str]] = {}
    for e in entries.values():
        by_type.setdefault(e.config.module, []).append(e.config.replace(dtype="fp32").key)
    keep_base = set()
    for module, bases in sorted(by_type.items()):
        uniq = sorted(set(bases))
        keep_base |= set(random.Random(f"{seed}|{module}").sample(uniq, min(n, len(uniq))))
    return {k: e for k, e in entries.items() if e.config.replace(dtype="fp32").key in keep_base}


def _cmd_tflite(args: argparse.Namespace) -> int:
    if args.models is None:
        args.models = os.path.splitext(args.out)[0] + ".models"
    try:
        keys = _tflite_export_configs(args)
    except KeyboardInterrupt:
        return 130
    args.module = args.n = None  # the exported configs are the selection
    return _cmd_tflite_run(args, keys)


def _ensure_measurement_env() -> None:
    """Measuring in this process: re-execute with the malloc settings unless they are set."""
    from ._device import MEASUREMENT_ENV, measurement_env

    if all(os.environ.get(k) == v for k, v in MEASUREMENT_ENV.items()):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "profilers._cli", *sys.argv[1:]], measurement_env())


def model_inputs(shape: Sequence[int], dtype: str = "float32", vocab: int = 1000) -> tuple[Any, ...]:
    """One example input tensor of `shape` and `dtype` (int64: token ids below `vocab`)."""
    import torch

    if not shape or any(d < 1 for d in shape):
        raise CommandError(
            f"--input-shape {','.join(map(str, shape))} is not valid: expected positive sizes, "
            "e.g. 1,3,224,224"
        )
    if dtype in ("int64", "long"):
        return (torch.randint(0, count(vocab, name="--vocab"), tuple(shape)),)
    dtypes = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "float16": torch.float16,
        "bfloat16": torch.bfloat16,
    }
    if dtype not in dtypes:
        raise CommandError(
            f"--input-dtype={dtype!r} is not valid: expected one of float32, float16, bfloat16, int64"
        )
    return (torch.randn(*shape, dtype=dtypes[dtype]),)


def _model_inputs(args: argparse.Namespace, batch: int) -> tuple[Any, ...]:
    return model_inputs([batch, *args.input_shape[1:]], args.input_dtype, args.vocab)


def _runtime(args: argparse.Namespace):
    """The model runtime of a command: torch, or TFLite with its delegate, dtype and models dir."""
    from ._models import TFLiteRuntime, TorchRuntime

    if getattr(args, "backend", "torch") == "torch":
        return TorchRuntime()
    from ._tflite_backend import TFLITE_DTYPES

    if args.tflite_dtype not in TFLITE_DTYPES:
        raise ValueError(
            f"--tflite-dtype {args.tflite_dtype!r} is not valid: expected one of {', '.join(TFLITE_DTYPES)}"
        )
    models = args.models or os.path.splitext(args.out)[0] + ".models"
    return TFLiteRuntime(Path(models), delegate=args.delegate, dtype=args.tflite_dtype)


def _cmd_torch_model(args: argparse.Namespace) -> int:
    from ._arch import append_record
    from ._models import MODEL_TIMER, build_model, factory_kwargs, load_factory, profile_torch_model

    load_factory(args.model)  # a bad spec fails now, before the re-execution below
    kwargs = factory_kwargs(args.kwargs)
    batches = args.batch or [args.input_shape[0]]
    if not args.out.endswith((".json", ".jsonl")):
        raise ValueError(
            f"--out={args.out!r} is not valid: expected a record file, .json (one batch size) or .jsonl"
        )
    if len(batches) > 1 and not args.out.endswith(".jsonl"):
        raise ValueError("--out must be a .jsonl file when several --batch sizes are given")
    check_output_file(args.out, "--out")
    count(args.threads, name="--threads")
    if not args.no_measure:
        _ensure_measurement_env()
    import torch

    torch.manual_seed(0)
    model = build_model(args.model, kwargs)
    name = args.name or args.model.split(":")[-1]
    timer = dataclasses.replace(MODEL_TIMER, min_run_time_s=args.min_run_time)
    runtime = _runtime(args)
    for b in batches:
        rec_name = f"{name}_b{b}" if len(batches) > 1 else name
        try:
            rec = profile_torch_model(
                model,
                _model_inputs(args, b),
                name=rec_name,
                threads=args.threads,
                utilization=args.utilization,
                timer=timer,
                measure=not args.no_measure,
                info={"factory": args.model, "kwargs": kwargs},
                runtime=runtime,
                rounds=args.rounds,
                round_gap_s=args.round_gap,
            )
        except RuntimeError as e:  # torch.export or the model itself failed on this input: the user's model
            raise CommandError(f"--model {args.model}: {e}") from e
        if args.out.endswith(".jsonl"):
            append_record(args.out, rec)
        else:
            rec.save(args.out)
        print(rec.summary())
    _log.info("wrote %s", args.out)
    return 0


def _cmd_generated(args: argparse.Namespace) -> int:
    from ._models import generated_jobs

    jobs = generated_jobs(
        range(args.seed, args.seed + count(args.n)),
        args.batch,
        args.threads,
        args.utilization,
        family=args.family,
        explicit_padding=args.explicit_padding,
    )
    return _profile_jobs(args, jobs, "generated networks")


def _cmd_zoo(args: argparse.Namespace) -> int:
    from . import zoo
    from ._models import zoo_jobs

    names = list(zoo.ZOO) if args.model == ["all"] else [n.strip() for v in args.model for n in v.split(",")]
    return _profile_jobs(args, zoo_jobs(names, args.batch), "zoo models")


def _profile_jobs(args: argparse.Namespace, jobs: list, what: str) -> int:
    from ._models import MODEL_TIMER, profile_many

    if not args.no_measure:
        _ensure_measurement_env()
    timer = dataclasses.replace(MODEL_TIMER, min_run_time_s=args.min_run_time)
    recs = profile_many(
        args.out,
        jobs,
        threads=args.threads,
        utilization=args.utilization,
        timer=timer,
        progress=not args.no_progress,
        measure=not args.no_measure,
        rounds=args.rounds,
        runtime=_runtime(args),
    )
    print(f"{'captured' if args.no_measure else 'measured'} {len(recs)} {what} -> {args.out}")
    return 0


def _cmd_catalogue(args: argparse.Namespace) -> int:
    for m in _modules(args.module or ["all"]):
        spec = get_spec(m)
        print(f"{spec.name}: {spec.doc}")
        for f in spec.fields:
            print(f"  {f.name:<14} {f.kind.__name__:<5} default={f.default!r:<8} {f.allowed()}  {f.doc}")
        if len(spec.families) > 1:
            print("  sampling families: " + ", ".join(f"{k} ({w:g})" for k, (w, _) in spec.families.items()))
    print("common fields (every module):")
    for f in COMMON_FIELDS:
        print(f"  {f.name:<14} {f.kind.__name__:<5} default={f.default!r:<8} {f.allowed()}  {f.doc}")
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:
    from ._dataset import read_dataset
    from ._runner import _per_module

    df = read_dataset(args.files, allow_mixed_devices=args.allow_mixed_devices, include_failed=True)
    for meta in df.attrs["jaxlat"]:
        fp = meta.get("fingerprint", {})
        print(
            f"schema v{meta['schema_version']}, {meta.get('backend')}"
            f"{' (' + fp['delegate'] + ')' if fp.get('delegate') else ''} on {meta.get('device')} "
            f"({fp.get('cpu_model')}{', ' + fp['gpu_name'] if fp.get('gpu_name') else ''}), "
            f"device_id {meta.get('device_id')}, {len(meta.get('runs', []))} run(s)"
        )
    rows = df.to_dict("records")
    print(f"{len(rows)} rows")
    print(f"{'module':<14} {'ok':>6} {'failed':>6} {'median ms':>10} {'median CoV':>10}")
    for m, s in _per_module(rows).items():
        print(
            f"{m:<14} {int(s['ok']):>6} {int(s['failed']):>6} {s['median_latency_ms']:>10.4g} {s['median_cov']:>10.3f}"
        )
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("jaxlat")
    except PackageNotFoundError:  # a source tree that is not installed
        return "0+unknown"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jaxlat-profile",
        formatter_class=HelpFormatter,
        description="Measure module latencies into a jaxlat dataset, and capture or time whole models.",
        epilog="Examples:\n" + __doc__.split("Examples:\n")[1].rstrip(),
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = output_options()

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help,
            description=help[0].upper() + help[1:] + ".",
            formatter_class=HelpFormatter,
            parents=[common],
        )

    def lists(
        q: argparse.ArgumentParser, flag: str, kind: Callable[[str], Any], default: Any, help: str, **kw: Any
    ) -> None:
        q.add_argument(
            flag,
            action=ListAction,
            type=csv_list(kind),
            default=default,
            help=help + "; comma-separated or repeated",
            **kw,
        )

    def sampling(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "--module",
            action="append",
            metavar="TYPES",
            help="module types to sample, comma-separated or repeated, or 'all' (see `catalogue`)",
        )
        q.add_argument(
            "--from-archs",
            action="append",
            metavar="RECORDS",
            help="the module configs of architecture records (.json/.jsonl) instead of sampling; "
            "--n N takes a seeded subset, --module filters types",
        )
        q.add_argument(
            "--n",
            action="append",
            metavar="N|MODULE=N",
            help="configs per module type: N, or MODULE=N for one type (repeatable); default 100",
        )
        q.add_argument(
            "--sampler",
            choices=METHODS,
            default="lhs",
            help="design: lhs (Latin hypercube, space-filling), random or grid",
        )
        q.add_argument("--seed", type=int, default=0, help="seed of the sampler (module type i uses SEED+i)")
        q.add_argument(
            "--range",
            action="append",
            metavar="[MODULE.]FIELD=SPEC",
            help="override a field's range (repeatable); SPEC: 16:512, 16:512:8, 1,3,5, =cin, 3",
        )
        q.add_argument(
            "--family", action="append", help="sampling families to use (e.g. depthwise; repeatable)"
        )
        q.add_argument("--max-gflops", type=float, default=None, help="skip configs above this many GFLOPs")
        lists(q, "--batch", int, [1], "batch sizes")
        q.add_argument(
            "--plugin",
            action="append",
            metavar="MODULE",
            help="importable Python module registering extra module types (repeatable)",
        )

    def measuring(q: argparse.ArgumentParser) -> None:
        lists(q, "--threads", int, [1], "intra-op thread counts")
        lists(q, "--utilization", float, [0.0], "background device utilization levels, 0..1")
        q.add_argument(
            "--out", required=True, metavar="PARQUET", help="dataset file; an existing one is resumed"
        )
        q.add_argument("--timeout", type=float, default=120.0, help="seconds per config before it is failed")
        q.add_argument(
            "--protocol",
            choices=sorted(PROTOCOLS),
            default="spread",
            help="spread (default): 5 rounds of 0.05 s a config, round-robin over the whole run, the labels "
            "that repeat best on a shared machine (train on p10); single: one 0.2 s window a config, 3x faster",
        )
        q.add_argument(
            "--min-run-time",
            type=float,
            default=None,
            help="seconds of timing per config, all rounds (default: the protocol's, 0.25 spread, 0.2 single)",
        )
        q.add_argument(
            "--min-repeats",
            type=int,
            default=TimerConfig().min_repeats,
            help="timed blocks per config, at least",
        )
        q.add_argument(
            "--load-workers", type=int, default=None, help="CPU load processes (default: one per logical CPU)"
        )
        q.add_argument(
            "--rounds",
            type=int,
            default=None,
            help="measure each config in N rounds spread in time, samples pooled (default: the protocol's, "
            "5 spread, 1 single)",
        )
        q.add_argument(
            "--retest",
            type=int,
            default=None,
            metavar="N",
            help="configs measured again at the end of the run, for the labels' test-retest agreement "
            "in the dataset's metadata (default: a tenth of the new ones, at most 30; 0: none)",
        )
        q.add_argument(
            "--chunk-size",
            type=int,
            default=None,
            help="with --rounds: configs measured round-robin together; a larger chunk spaces a "
            "config's rounds further apart (a chunk of 200 at 0.1 s a config: about 20 s), so "
            "that a slow spell of the machine touches one round, not all (default: the protocol's, "
            "every config of the run for spread)",
        )
        q.add_argument(
            "--retry-failed", action="store_true", help="measure (or export) configs that failed before again"
        )
        q.add_argument("--no-progress", action="store_true", help="no progress bar")

    def exporting(q: argparse.ArgumentParser, *, required: bool) -> None:
        lists(
            q,
            "--dtype",
            str,
            ["fp32"],
            "TFLite precisions: fp32, fp16w (fp16 weights), int8 (full-integer PTQ)",
        )
        q.add_argument(
            "--models",
            required=required,
            metavar="DIR",
            help="models directory: the .tflite files and their manifest; the conversion cache"
            + ("" if required else " (default: next to --out)"),
        )
        q.add_argument("--jobs", type=int, default=1, help="conversion processes")

    def delegate(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "--delegate",
            choices=("xnnpack", "none"),
            default="xnnpack",
            help="LiteRT CPU delegate: xnnpack (LiteRT's default) or none (built-in kernels)",
        )

    t = command("torch", "measure modules with PyTorch (cpu or cuda)")
    sampling(t)
    measuring(t)
    lists(t, "--dtype", str, ["fp32"], "precisions: fp32, fp16, bf16")
    t.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    t.set_defaults(func=_cmd_torch)

    te = command(
        "tflite-export", "host: convert module configs to .tflite models (needs torch, litert-torch)"
    )
    sampling(te)
    exporting(te, required=True)
    te.add_argument(
        "--retry-failed", action="store_true", help="convert configs again whose export failed before"
    )
    te.add_argument("--no-progress", action="store_true", help="no progress bar")
    te.set_defaults(func=_cmd_tflite_export)

    tr = command("tflite-run", "target: measure exported .tflite models (needs only ai-edge-litert)")
    tr.add_argument(
        "--models", required=True, metavar="DIR", help="models directory written by tflite-export"
    )
    tr.add_argument(
        "--module",
        action="append",
        metavar="TYPES",
        help="measure only these module types (comma-separated or repeated)",
    )
    lists(tr, "--dtype", str, None, "measure only these precisions (default: all exported)")
    tr.add_argument(
        "--n",
        type=int,
        default=None,
        help="measure a seeded sample of at most N configs per module type (the same configs in every "
        "dtype; default: all)",
    )
    tr.add_argument("--seed", type=int, default=0, help="seed of the --n sample")
    tr.add_argument(
        "--plugin",
        action="append",
        metavar="MODULE",
        help="importable Python module registering extra module types (repeatable)",
    )
    measuring(tr)
    delegate(tr)
    tr.set_defaults(func=_cmd_tflite_run)

    tf = command("tflite", "export and measure on this machine (tflite-export, then tflite-run)")
    sampling(tf)
    measuring(tf)
    exporting(tf, required=False)
    delegate(tf)
    tf.set_defaults(func=_cmd_tflite)

    def model_backend(q: argparse.ArgumentParser, *, tflite_only: bool = False) -> None:
        if not tflite_only:
            q.add_argument(
                "--backend",
                choices=("torch", "tflite"),
                default="torch",
                help="run the models in torch, or convert them to .tflite and run them with LiteRT",
            )
        q.add_argument(
            "--tflite-dtype", default="fp32", choices=("fp32", "fp16w", "int8"), help="TFLite precision"
        )
        delegate(q)
        q.add_argument(
            "--models", metavar="DIR", help="where converted .tflite models are kept (default: next to --out)"
        )

    def timing(q: argparse.ArgumentParser, *, rounds: int, rounds_help: str) -> None:
        q.add_argument("--threads", type=int, default=1, help="intra-op threads")
        q.add_argument(
            "--utilization", type=float, default=0.0, help="background CPU utilization 0..1 while timing"
        )
        q.add_argument(
            "--min-run-time", type=float, default=1.0, help="seconds of timing per model (all rounds)"
        )
        q.add_argument("--rounds", type=int, default=rounds, help=rounds_help)

    def one_model(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "--model",
            required=True,
            metavar="PKG.MOD:FACTORY",
            help="a factory returning an nn.Module, e.g. profilers.zoo:resnet50",
        )
        q.add_argument("--kwargs", metavar="JSON", help="keyword arguments for the factory, as a JSON object")
        q.add_argument(
            "--input-shape",
            type=csv_list(int),
            required=True,
            metavar="N,C,H,W",
            help="example input shape, e.g. 1,3,224,224",
        )
        q.add_argument(
            "--input-dtype",
            default="float32",
            choices=("float32", "float16", "bfloat16", "int64"),
            help="example input dtype (int64: token ids)",
        )
        q.add_argument(
            "--vocab", type=int, default=1000, help="token ids are drawn below this (int64 inputs)"
        )
        q.add_argument(
            "--batch",
            action=ListAction,
            type=csv_list(int),
            metavar="SIZES",
            help="batch sizes replacing the first input dimension, comma-separated or repeated "
            "(default: the shape's)",
        )
        timing(
            q,
            rounds=1,
            rounds_help="time the model in N rounds --round-gap seconds apart, samples pooled; on "
            "a machine whose speed wanders, the pooled p10_ms is the undisturbed latency",
        )
        q.add_argument("--round-gap", type=float, default=5.0, help="seconds between rounds")
        q.add_argument("--name", help="record name (default: the factory's name)")
        q.add_argument(
            "--no-measure",
            action="store_true",
            help="capture the architecture record only, do not time the model",
        )
        q.add_argument(
            "--out",
            required=True,
            metavar="FILE",
            help="record file: .json (one batch size) or .jsonl (appended)",
        )

    m = command("torch-model", "capture a torch model's architecture record and time it end to end")
    one_model(m)
    m.set_defaults(func=_cmd_torch_model, backend="torch")
    tm = command("tflite-model", "torch-model, converted to .tflite and timed with LiteRT")
    one_model(tm)
    model_backend(tm, tflite_only=True)
    tm.set_defaults(func=_cmd_torch_model, backend="tflite")

    g = command("generated", "capture and time generated networks (composition training data)")
    g.add_argument("--n", type=int, required=True, help="number of networks (seeds SEED..SEED+N-1)")
    g.add_argument("--seed", type=int, default=0, help="seed of the first network")
    g.add_argument(
        "--family",
        choices=("resnet", "mbconv", "vit", "text"),
        help="every network of this family (default: the family cycles with the seed)",
    )
    g.add_argument(
        "--explicit-padding",
        action="store_true",
        help="TensorFlow-style 'same' padding as a separate pad operator before every convolution",
    )
    g.set_defaults(func=_cmd_generated)
    z = command("zoo", "capture and time real architectures (profilers.zoo; needs the models extra)")
    z.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="NAMES",
        help="zoo names, comma-separated or repeated, or 'all'",
    )
    z.set_defaults(func=_cmd_zoo)
    for q in (g, z):
        lists(q, "--batch", int, [1], "batch sizes")
        timing(
            q, rounds=3, rounds_help="measure each model in N rounds, interleaved with other models, pooled"
        )
        q.add_argument("--no-progress", action="store_true", help="no progress lines")
        q.add_argument(
            "--no-measure", action="store_true", help="capture the records only, do not time the models"
        )
        q.add_argument(
            "--out", required=True, metavar="JSONL", help="records file; an existing one is resumed"
        )
        model_backend(q)

    c = command("catalogue", "list module types, fields and allowed values")
    c.add_argument(
        "--module",
        action="append",
        metavar="TYPES",
        help="only these module types, comma-separated or repeated (default: all)",
    )
    c.set_defaults(func=_cmd_catalogue)

    s = command("summary", "check dataset files and print a summary")
    s.add_argument("files", nargs="+", metavar="FILE", help="dataset files (.parquet)")
    s.add_argument(
        "--allow-mixed-devices", action="store_true", help="accept files measured on different devices"
    )
    s.set_defaults(func=_cmd_summary)
    return p


def _terminate(signum, frame):  # SIGTERM ends a run like Ctrl-C: flush, summary, exit 130
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """The `jaxlat-profile` command; returns the exit status (2 for a usage or input error)."""
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return run_main(build_parser(), argv, prog="jaxlat-profile")
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
