"""`jaxlat-profile`: measure modules into a dataset, list the catalogue, summarize datasets.

Examples:
  jaxlat-profile torch --module conv2d --n 500 --device cpu --threads 1 --utilization 0,0.5 --out data/cpu.parquet
  jaxlat-profile torch --module all --n 50 --n conv2d=200 --range kernel=1,3 --out data/small.parquet
  jaxlat-profile catalogue --module conv2d
  jaxlat-profile summary data/cpu.parquet
"""

from __future__ import annotations

import argparse
import shlex
import signal
import threading
import sys
from collections.abc import Sequence
from typing import Any

from ._catalogue import COMMON_FIELDS, get_spec, module_types
from ._samplers import METHODS, expand, parse_range, sample_configs
from ._timer import TimerConfig


def _csv(kind):
    def parse(text: str) -> list[Any]:
        try:
            return [kind(t) for t in text.split(",") if t.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of {kind.__name__}") from None

    return parse


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


def _counts(values: Sequence[str], modules: Sequence[str]) -> dict[str, int]:
    default, per = None, {}
    for v in values:
        if "=" in v:
            name, n = v.split("=", 1)
            get_spec(name)
            per[name] = int(n)
        else:
            default = int(v)
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
                out.setdefault(m, {})[field] = parse_range(spec.field(field), spec_text)
                hit = True
        if not hit:
            raise ValueError(f"--range {v!r}: no selected module has a field {field!r}")
    return out


def _import_plugins(names: Sequence[str] | None) -> list[str]:
    import importlib

    for name in names or []:
        importlib.import_module(name)
    return list(names or [])


def _cmd_torch(args: argparse.Namespace) -> int:
    from ._runner import run_profile

    plugins = _import_plugins(args.plugin)
    modules = _modules(args.module)
    counts = _counts(args.n or ["100"], modules)
    ranges = _ranges(args.range or [], modules)
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
    configs = expand(
        configs,
        batch_size=args.batch,
        dtype=args.dtype,
        threads=args.threads,
        utilization=args.utilization,
    )
    timer = TimerConfig(min_run_time_s=args.min_run_time, min_repeats=args.min_repeats)
    print(f"profiling {len(configs)} configs of {len(modules)} module types on {args.device} -> {args.out}", file=sys.stderr)
    summary = run_profile(
        configs,
        args.out,
        backend="torch",
        device=args.device,
        timer=timer,
        timeout_s=args.timeout,
        load_workers=args.load_workers,
        retry_failed=args.retry_failed,
        plugins=plugins,
        rounds=args.rounds,
        progress=not args.no_progress,
        run_info={"sampler": args.sampler, "seed": args.seed, "command": shlex.join(["jaxlat-profile", *sys.argv[1:]])},
    )
    print(summary.format())
    return 130 if summary.interrupted else 0


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
            f"schema v{meta['schema_version']}, {meta.get('backend')} on {meta.get('device')} "
            f"({fp.get('cpu_model')}{', ' + fp['gpu_name'] if fp.get('gpu_name') else ''}), "
            f"device_id {meta.get('device_id')}, {len(meta.get('runs', []))} run(s)"
        )
    rows = df.to_dict("records")
    print(f"{len(rows)} rows")
    print(f"{'module':<14} {'ok':>6} {'failed':>6} {'median ms':>10} {'median CoV':>10}")
    for m, s in _per_module(rows).items():
        print(f"{m:<14} {int(s['ok']):>6} {int(s['failed']):>6} {s['median_latency_ms']:>10.4g} {s['median_cov']:>10.3f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jaxlat-profile", description="Measure module latencies into a jaxlat dataset.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("torch", help="measure modules with PyTorch (cpu or cuda)")
    t.add_argument("--module", action="append", required=True, help="module type(s), comma-separated, or 'all'")
    t.add_argument("--n", action="append", help="configs per module: N, or MODULE=N (repeatable)")
    t.add_argument("--sampler", choices=METHODS, default="lhs", help="design (default: lhs, space-filling)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--range", action="append", help="FIELD=SPEC or MODULE.FIELD=SPEC; SPEC: 16:512, 16:512:8, 1,3,5, =cin, 3")
    t.add_argument("--family", action="append", help="sampling families to use (e.g. depthwise)")
    t.add_argument("--max-gflops", type=float, default=None, help="skip configs above this many GFLOPs")
    t.add_argument("--batch", type=_csv(int), default=[1], help="batch sizes, comma-separated (default 1)")
    t.add_argument("--dtype", type=_csv(str), default=["fp32"], help="fp32,fp16,bf16 (default fp32)")
    t.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    t.add_argument("--threads", type=_csv(int), default=[1], help="intra-op threads, comma-separated (default 1)")
    t.add_argument("--utilization", type=_csv(float), default=[0.0], help="background utilization levels 0..1 (default 0)")
    t.add_argument("--out", required=True, help="dataset file (.parquet); an existing one is resumed")
    t.add_argument("--timeout", type=float, default=120.0, help="seconds per config before it is failed")
    t.add_argument("--min-run-time", type=float, default=TimerConfig().min_run_time_s, help="seconds of timing per config")
    t.add_argument("--min-repeats", type=int, default=TimerConfig().min_repeats, help="timed blocks per config, at least")
    t.add_argument("--load-workers", type=int, default=None, help="CPU load processes (default: one per CPU)")
    t.add_argument("--rounds", type=int, default=1, help="measure each config in N rounds seconds apart, pooled (noisy machines)")
    t.add_argument("--retry-failed", action="store_true", help="measure configs that failed before again")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--plugin", action="append", help="Python module registering extra module types (importable)")
    t.set_defaults(func=_cmd_torch)

    c = sub.add_parser("catalogue", help="list module types, fields and allowed values")
    c.add_argument("--module", action="append")
    c.set_defaults(func=_cmd_catalogue)

    s = sub.add_parser("summary", help="check dataset files and print a summary")
    s.add_argument("files", nargs="+")
    s.add_argument("--allow-mixed-devices", action="store_true")
    s.set_defaults(func=_cmd_summary)
    return p


def _terminate(signum, frame):  # SIGTERM ends a run like Ctrl-C: flush, summary, exit 130
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return args.func(args)
    except ValueError as e:  # bad input: one clear line, no traceback
        print(f"jaxlat-profile: error: {e}", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
