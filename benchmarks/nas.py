"""Gradient-based NAS with the latency penalty, judged by measurement: search the MobileNet-like
space at several penalty strengths and several latency targets, then measure every derived
architecture end to end on this CPU (not predicted), and time the latency term's share of an
architecture step.

  python benchmarks/nas.py                       # searches, then measurements, then the report
  python benchmarks/nas.py --phase measure       # measure the archs of a finished search phase
  python benchmarks/nas.py --phase deploy        # calibrate again, fit the targets, measure, report
  python benchmarks/nas.py --phase deploy --refine 1   # and one closed-loop step per target first

Writes nas.json / nas.md (and nas_archs.json, nas_records.jsonl in between). Acceptance checks
in the report: measured latency falls monotonically as the additive penalty tightens; with a
target T, measured latency within 10 % of T.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import itertools

from _common import STATISTICS, calibrate_to_records, machine, machine_markdown, write_results

RESULTS = Path(__file__).parent / "results"


def search_phase(args) -> None:
    import jax
    import jax.numpy as jnp

    from jaxlat import load_predictor
    from jaxlat.nas import (
        ArchParams,
        SearchConfig,
        calibrated_latency_fn,
        digits_data,
        expected_latency_fn,
        init_supernet,
        make_steps,
        no_penalty,
        proxyless_penalty,
        search,
        tfnas_penalty,
    )
    from profilers.spaces import mobile_space

    if args.correction == "adaproxy":
        raise SystemExit("--correction adaproxy: not a map a JAX latency can carry; search with auto, affine or "
                         "recompose, and use adaproxy at --phase deploy")
    pred = load_predictor(args.predictor)
    space = mobile_space(resolution=args.resolution)
    cfg = SearchConfig(epochs=args.epochs, warmup_epochs=max(1, args.epochs // 5))
    data = digits_data(cfg.train_resolution)
    cal = calibrate(args, space, pred) if args.calibrate else None
    # Log-affine in the predicted latency, or the predictor with its composition refitted here.
    lat = calibrated_latency_fn(pred, space, cal, latency_ms=expected_latency_fn(pred, space))
    calibration = cal.as_json() if cal is not None else None

    def predicted_ms(records):  # on this machine's scale
        if cal is None:
            return pred.predict_models(records)["latency_ms"].to_numpy()
        return cal.predict(records)

    runs = [("proxyless", {"lam": lam}, proxyless_penalty(lam)) for lam in args.lams]
    runs += [("tfnas", {"lam": args.target_lam, "target_ms": t}, tfnas_penalty(args.target_lam, t)) for t in args.targets]
    path = RESULTS / "nas_archs.json"
    previous = json.loads(path.read_text()) if (args.append and path.exists()) else {}
    out = list(previous.get("runs", []))
    done = {(r["penalty"], r["lam"], r.get("target_ms")) for r in out}
    for kind, settings, pen in runs:
        if (kind, settings["lam"], settings.get("target_ms")) in done:
            continue
        t0 = time.perf_counter()
        r = search(space, pred, pen, data=data, config=cfg, latency_ms=lat, progress=False)
        row = {"penalty": kind, **settings, "expected_latency_ms": r.expected_latency_ms,
               "uncalibrated_latency_ms": r.predicted_latency_ms, "supernet_accuracy": r.supernet_accuracy,
               "search_s": r.seconds, "history": r.history, "probs": np.asarray(r.probs).tolist()}
        row.update(_finish(space, r.arch, r.probs, kind, settings, predicted_ms, data, args))
        out.append(row)
        print(f"{kind} {settings}: predicted {row['predicted_latency_ms']:.3f} ms, accuracy {row['trained_accuracy']:.3f}, "
              f"{time.perf_counter() - t0:.0f} s; {row['arch']}", flush=True)
    if previous.get("overhead"):
        payload = {**previous, "runs": out}
        path.write_text(json.dumps(payload, indent=1, default=float) + "\n")
        return
    # The latency term's share of an architecture step: the same step with and without it.
    import optax
    from flax import nnx

    model = init_supernet(space, 0)
    _, params = nnx.split(model)
    arch = ArchParams(jnp.zeros((len(space.layers()), len(space.ops))), jnp.zeros((len(space.stages),)))
    x, y = data.x_arch[:cfg.batch_size], data.y_arch[:cfg.batch_size]
    times = {}
    steps = {}
    for name, pen in (("without", no_penalty()), ("with", proxyless_penalty(0.05))):
        wopt, aopt = optax.adam(cfg.weight_lr), optax.adam(cfg.arch_lr)
        _, a_step = make_steps(space, model, pen, lat, cfg, wopt, aopt)
        state = aopt.init(arch)
        jax.block_until_ready(a_step(params, arch, state, x, y, jax.random.key(0), 1.0))
        steps[name] = (a_step, state)
        times[name] = []
    for _ in range(args.overhead_repeats):  # alternate, so drift hits both alike
        for name, (a_step, state) in steps.items():
            t = time.perf_counter()
            jax.block_until_ready(a_step(params, arch, state, x, y, jax.random.key(0), 1.0))
            times[name].append(time.perf_counter() - t)
    overhead = {k: {"median_ms": 1e3 * float(np.median(v)), "p10_ms": 1e3 * float(np.quantile(v, 0.1)),
                    "p90_ms": 1e3 * float(np.quantile(v, 0.9))} for k, v in times.items()}
    overhead["ratio"] = overhead["with"]["median_ms"] / overhead["without"]["median_ms"]
    payload = {"space": {"name": space.name, "resolution": space.resolution, "ops": list(space.ops),
                         "width_range": list(space.width_range)},
               "predictor": str(args.predictor or "shipped cpu_torch_1t"),
               "predictor_device": pred.device.get("fingerprint", {}).get("cpu_model"), "config": vars(cfg), "runs": out,
               "calibration": calibration,
               "overhead": overhead}
    (RESULTS / "nas_archs.json").write_text(json.dumps(payload, indent=1, default=float) + "\n")


def _finish(space, arch, probs, kind, settings, predicted_ms, data, args) -> dict:
    """The derived architecture's record: for the target form, fitted to T under the predictor
    (`jaxlat.nas.fit_to_target`: widths, then the most probable op changes); then trained alone."""
    from jaxlat.nas import fit_to_target, train_derived

    if kind == "tfnas":
        fitted, ms = fit_to_target(space, np.asarray(probs), arch, predicted_ms, settings["target_ms"])
        return _target_row(space, arch, fitted, ms, predicted_ms, data, args)
    return {"arch": space.encode(arch), "predicted_latency_ms": float(predicted_ms([space.record(arch)])[0]),
            "trained_accuracy": train_derived(space, arch, data, epochs=args.train_epochs)}


def _target_row(space, searched, fitted, fitted_ms: float, predicted_ms, data, args) -> dict:
    """A target run's record: the searched and the fitted architecture, their predicted
    latencies, the fitted one's accuracy trained alone."""
    from jaxlat.nas import train_derived

    return {"searched_arch": space.encode(searched), "searched_predicted_ms": float(predicted_ms([space.record(searched)])[0]),
            "arch": space.encode(fitted), "predicted_latency_ms": fitted_ms,
            "trained_accuracy": train_derived(space, fitted, data, epochs=args.train_epochs)}


def deploy_phase(args) -> None:
    """Calibrate again right before measuring (this VM's speed drifts by tens of percent within
    an hour), and derive the target runs' architectures under that calibration from their
    searches' op probabilities (`fit_to_target`): the target is a latency on the machine as it is
    when the network is deployed. The additive runs keep their architectures; their predicted
    latencies move to the new calibration."""
    from jaxlat import load_predictor
    from jaxlat.nas import digits_data
    from profilers import load_records
    from profilers.spaces import decode, mobile_space

    path = RESULTS / "nas_archs.json"
    payload = json.loads(path.read_text())
    pred = load_predictor(args.predictor)
    space = mobile_space(resolution=payload["space"]["resolution"])
    (RESULTS / "nas_calibration_archs.json").write_text(json.dumps(_calibration_spec(space, args)))
    _measure_subprocess("calibrate-measure", args)
    # No gradient needed here: any correction `adapt` offers may be chosen (by leave-one-out error).
    cal = calibrate_to_records(pred, load_records(RESULTS / "nas_calibration_records.jsonl"), "NAS deploy",
                               methods=("reuse", "affine", "recompose", "adaproxy"), statistic=args.statistic,
                               force=None if args.correction == "auto" else args.correction)
    predicted_ms = cal.predict

    data = digits_data(payload["config"]["train_resolution"])
    for r in payload["runs"]:
        if r["penalty"] == "tfnas":
            if "probs" not in r:
                raise SystemExit(f"run T={r['target_ms']} has no op probabilities: search it again (--phase search)")
            r.update(_finish(space, decode(space, r.get("searched_arch", r["arch"])), r["probs"], "tfnas", r,
                             predicted_ms, data, args))
            print(f"deploy T={r['target_ms']}: {r['searched_arch']} ({r['searched_predicted_ms']:.3f} ms) -> "
                  f"{r['arch']} ({r['predicted_latency_ms']:.3f} ms)", flush=True)
        else:
            r["predicted_latency_ms"] = float(predicted_ms([space.record(decode(space, r["arch"]))])[0])
    payload["deploy_calibration"] = cal.as_json()
    path.write_text(json.dumps(payload, indent=1, default=float) + "\n")
    for step in range(args.refine):
        _refine(payload, space, predicted_ms, data, args, step)
        path.write_text(json.dumps(payload, indent=1, default=float) + "\n")


def _refine(payload: dict, space, predicted_ms, data, args, step: int) -> None:
    """One closed-loop step for the target runs (`jaxlat.nas.refine_to_target`): measure each
    fitted architecture (interleaved with the calibration architectures, so that its rounds
    spread over minutes), scale the calibrated predictor by measured / predicted at that
    architecture, and fit the search's probabilities to T again under the scaled predictor. The
    final architectures are measured afresh with the others."""
    from jaxlat.nas import refine_to_target
    from profilers import load_records
    from profilers.spaces import decode

    (RESULTS / "nas_refine_records.jsonl").unlink(missing_ok=True)
    _measure_subprocess("refine-measure", args)
    measured = {r.name: r.measured for r in load_records(RESULTS / "nas_refine_records.jsonl")}
    key = STATISTICS[args.statistic]
    for i, r in enumerate(payload["runs"]):
        if r["penalty"] != "tfnas":
            continue
        m = float(measured[f"run{i}"][key])
        searched = decode(space, r["searched_arch"])
        new = refine_to_target(space, r["probs"], searched, predicted_ms, r["target_ms"], measured_ms=m,
                               predicted_ms=r["predicted_latency_ms"], local_scale=r.get("local_scale", 1.0))
        r.setdefault("refine", []).append({"step": step, "arch": r["arch"], "predicted_ms": r["predicted_latency_ms"],
                                           "measured_ms": m, "local_scale": new.local_scale})
        r["local_scale"] = new.local_scale
        r.update(_target_row(space, searched, new.arch, new.predicted_ms, new.latency_ms, data, args))
        print(f"refine {step} T={r['target_ms']}: measured {m:.3f} ms, local scale {new.local_scale:.3f} -> "
              f"{r['arch']} ({r['predicted_latency_ms']:.3f} ms)", flush=True)




def calibrate(args, space, pred):
    """Calibration of the predictor to this machine (`jaxlat.transfer.calibrate` among the
    corrections a JAX latency can carry: reuse or affine in log latency, or the composition
    refitted; `--correction` forces one) from `args.calibrate` architectures spanning the space,
    measured end to end here; the search then penalizes the calibrated latency. Returns the
    `jaxlat.transfer.Calibration`."""
    from profilers import load_records

    path, rec_path = RESULTS / "nas_calibration_archs.json", RESULTS / "nas_calibration_records.jsonl"
    spec = _calibration_spec(space, args)
    have = {r.name for r in load_records(rec_path)} if rec_path.exists() else set()
    same = path.exists() and json.loads(path.read_text()) == spec
    if not (same and have >= {f"cal{i}" for i in range(len(spec["archs"]))}):  # else: measured before, reuse
        path.write_text(json.dumps(spec))
        _measure_subprocess("calibrate-measure", args)
    measured = {r.name: r for r in load_records(rec_path)}
    return calibrate_to_records(pred, [measured[f"cal{i}"] for i in range(len(spec["archs"]))], "NAS",
                                methods=("reuse", "affine", "recompose"), statistic=args.statistic,
                                force=None if args.correction == "auto" else args.correction)


def _calibration_spec(space, args) -> dict:
    """The calibration architectures: `args.calibrate` spanning the space's latency range, half
    of them with every stage at the widest or the narrowest width (`jaxlat.transfer.spanning_archs`)."""
    from jaxlat.transfer import spanning_archs

    archs = [space.encode(a) for a in spanning_archs(space, args.calibrate, seed=10_000, corner_widths=True)]
    return {"resolution": space.resolution, "archs": archs}


def _measure_subprocess(phase: str, args) -> None:
    from profilers import MEASUREMENT_ENV

    subprocess.run([sys.executable, __file__, "--phase", phase, "--rounds", str(args.rounds)],
                   env={**os.environ, **MEASUREMENT_ENV}, check=True)


def _measure_archs(space, named_archs, out: Path, rounds: int) -> None:
    from profilers import MODEL_TIMER, profile_many
    from profilers.spaces import decode

    jobs = []
    for name, text in named_archs:
        arch = decode(space, text)

        def build(arch=arch):
            import torch

            return space.torch_model(arch), (torch.randn(*space.input_shape()),), {"arch": space.encode(arch)}

        jobs.append((name, build))
    profile_many(out, jobs, timer=MODEL_TIMER, rounds=rounds, chunk_size=len(jobs))


def _calibration_named() -> list[tuple[str, str]]:
    """The calibration architectures of `nas_calibration_archs.json`, named `cal{i}`."""
    return [(f"cal{i}", a) for i, a in enumerate(json.loads((RESULTS / "nas_calibration_archs.json").read_text())["archs"])]


def calibrate_phase(args) -> None:
    from profilers.spaces import mobile_space

    spec = json.loads((RESULTS / "nas_calibration_archs.json").read_text())
    out = RESULTS / "nas_calibration_records.jsonl"
    out.unlink(missing_ok=True)
    _measure_archs(mobile_space(resolution=spec["resolution"]), _calibration_named(), out, args.rounds)


def measure_phase(args, *, targets_only: bool = False) -> None:
    """Measure the derived architectures end to end (rounds interleaved), in this process; the
    caller starts it with the measurement environment. The calibration architectures are
    measured again in the same rounds (the drift since calibrating; between the targets, they
    spread each one's rounds over minutes). `targets_only`: the target runs' architectures, into
    `nas_refine_records.jsonl` (`--phase refine-measure`, for `--refine`)."""
    from profilers.spaces import mobile_space

    payload = json.loads((RESULTS / "nas_archs.json").read_text())
    space = mobile_space(resolution=payload["space"]["resolution"])
    out = RESULTS / ("nas_refine_records.jsonl" if targets_only else "nas_records.jsonl")
    named = [(f"run{i}", r["arch"]) for i, r in enumerate(payload["runs"])
             if not targets_only or r["penalty"] == "tfnas"]
    if (targets_only or payload.get("calibration")) and (RESULTS / "nas_calibration_archs.json").exists():
        named += _calibration_named()
    _measure_archs(space, named, out, args.rounds)


def report(args) -> None:
    from profilers import load_records

    payload = json.loads((RESULTS / "nas_archs.json").read_text())
    measured = {r.name: r.measured for r in load_records(RESULTS / "nas_records.jsonl")}
    key = STATISTICS[args.statistic]
    runs = payload["runs"]
    for i, r in enumerate(runs):
        m = measured[f"run{i}"]
        r["measured_ms"], r["measured_median_ms"] = m[key], m["latency_ms"]
        r["measured_p10_ms"], r["measured_p90_ms"] = m["p10_ms"], m["p90_ms"]
        r["round_medians_ms"] = m.get("round_medians_ms")
    prox = sorted((r for r in runs if r["penalty"] == "proxyless"), key=lambda r: r["lam"])
    lat = [r["measured_ms"] for r in prox]
    monotone = all(b < a for a, b in itertools.pairwise(lat))
    targets = [r for r in runs if r["penalty"] == "tfnas"]
    within = [abs(r["measured_ms"] / r["target_ms"] - 1) <= 0.10 for r in targets]
    summary = {"monotone": monotone, "targets_within_10pct": int(sum(within)), "n_targets": len(targets),
               "overhead_ratio": payload["overhead"]["ratio"]}
    drift = _drift(payload, measured, key)
    if drift:
        summary["calibration_drift"] = drift["median_ratio"]
        # The machine's speed between calibration and measurement, taken out: each found
        # network's latency over the calibration networks' median now/then ratio (same rounds).
        norm = [r["measured_ms"] / drift["median_ratio"] / r["target_ms"] for r in targets]
        summary["targets_within_10pct_drift_normalized"] = int(sum(abs(x - 1) <= 0.10 for x in norm))
    meta = {"machine": machine(), "args": vars(args)}
    md = ["# NAS with a latency penalty, measured\n\n", machine_markdown(meta["machine"]), "\n",
          (f"Space: {payload['space']['name']} at {payload['space']['resolution']}x{payload['space']['resolution']}, "
          f"ops {', '.join(payload['space']['ops'])}, stage widths in {payload['space']['width_range']}. "
          f"Predictor: {payload['predictor']}. Search: {payload['config']['epochs']} epochs on scikit-learn's digits "
          f"(8x8); accuracy: the derived architecture trained alone, test split.\n\n"),
          (f"Calibration to this machine and statistic (the predictor's data: {payload.get('predictor_device') or 'unknown'}"
           f"): `jaxlat.transfer.adapt` on {payload['calibration']['k']} architectures of the space spanning its "
           f"latency range, measured here: {_correction_md(payload['calibration'])}. The penalty uses it"
           f"{'' if payload.get('deploy_calibration') else ', and the predicted column'}.\n\n"
           if payload.get("calibration") else ""),
          (_deploy_md(payload["deploy_calibration"]) if payload.get("deploy_calibration") else ""),
          "Measured: the derived architecture's torch model, end to end, 1 thread, batch 1, "
          + ("median of pooled rounds (p10-p90 of the samples)" if args.statistic == "median" else
             "10th percentile of the pooled rounds' samples (`--statistic p10`; median, and p90, in brackets): this "
             "VM's speed wanders from minute to minute, and the p10 is the statistic that repeats; calibration uses "
             "the same statistic")
          + ".\n\n",
          ("| penalty | setting | predicted ms | measured ms (p10-p90) | measured / predicted | accuracy | architecture |\n"
           if args.statistic == "median" else
           "| penalty | setting | predicted ms | measured p10 ms (median, p90) | measured / predicted | accuracy | architecture |\n"),
          "|---|---|---|---|---|---|---|\n"]
    for r in runs:
        setting = f"lambda={r['lam']:g}" + (f", T={r['target_ms']:g} ms" if r["penalty"] == "tfnas" else "")
        spread = (f"{r['measured_p10_ms']:.3f}-{r['measured_p90_ms']:.3f}" if args.statistic == "median" else
                  f"{r['measured_median_ms']:.3f}, {r['measured_p90_ms']:.3f}")
        md.append(f"| {r['penalty']} | {setting} | {r['predicted_latency_ms']:.3f} | {r['measured_ms']:.3f} "
                  f"({spread}) | {r['measured_ms'] / r['predicted_latency_ms']:.3f} | "
                  f"{r['trained_accuracy']:.3f} | `{r['arch']}` |\n")
    o = payload["overhead"]
    md += [(f"\nAdditive penalty: measured latency {'falls monotonically' if monotone else 'does NOT fall monotonically'} "
           f"as lambda grows ({' > '.join(f'{x:.3f}' for x in lat)} ms).\n\n"),
           "".join(f"Target T={r['target_ms']:g} ms: the search derived `{r['searched_arch']}` (predicted "
                   f"{r['searched_predicted_ms']:.3f} ms); fitted to T under the predictor "
                   f"(`jaxlat.nas.fit_to_target`: widths, then the most probable op changes)."
                   + "".join(f" Closed loop, step {x['step'] + 1}: `{x['arch']}` measured {x['measured_ms']:.3f} ms "
                             f"({x['measured_ms'] / r['target_ms']:.3f} x T; predicted {x['predicted_ms']:.3f}), so "
                             f"the prediction was scaled by {x['local_scale']:.3f} there and fitted to T again."
                             for x in r.get("refine", []))
                   + "\n\n" for r in targets if "searched_arch" in r),
           f"Targets: measured within 10 % of T for {sum(within)} of {len(targets)} ("
           + ", ".join(f"T={r['target_ms']:g}: {r['measured_ms'] / r['target_ms']:.3f}" for r in targets) + ").\n\n",
           (f"Drift: the {drift['k']} calibration architectures, measured again in the same rounds as the found ones, "
            f"ran at {drift['median_ratio']:.3f} x their calibration-time latency (median; range "
            f"{drift['min_ratio']:.3f}-{drift['max_ratio']:.3f}, standard deviation of the log ratio {drift['log_sd']:.3f}). "
            f"With that taken out (measured / {drift['median_ratio']:.3f}: the machine's speed as it was at calibration), "
            f"the targets land at " + ", ".join(f"T={r['target_ms']:g}: {x:.3f}" for r, x in zip(targets, norm))
            + f" x T ({summary['targets_within_10pct_drift_normalized']} of {len(targets)} within 10 %).\n\n"
            if drift else ""),
           (f"Latency term overhead: an architecture step takes {o['with']['median_ms']:.1f} ms with the latency term and "
           f"{o['without']['median_ms']:.1f} ms without (medians of {args.overhead_repeats} alternating calls; "
           f"p10-p90 {o['with']['p10_ms']:.1f}-{o['with']['p90_ms']:.1f} and {o['without']['p10_ms']:.1f}-"
           f"{o['without']['p90_ms']:.1f}): ratio {o['ratio']:.3f}.\n")]
    path = write_results(RESULTS, "nas", {"meta": meta, "summary": summary, **payload}, "".join(md))
    print(path.read_text())


def _correction_md(cal: dict) -> str:
    """What a calibration summary (`Calibration.as_json`) chose, how, and its form."""
    loo = ", ".join(f"{m} {v['log_rmse']:.3f}" for m, v in cal["report"]["candidates"].items())
    if cal.get("log_affine"):
        form = f"target ms = {np.exp(cal['log_affine'][0]):.3f} x predicted ** {cal['log_affine'][1]:.3f}"
    elif cal.get("composition"):
        c = cal["composition"]
        form = (f"the module predictions kept, the composition refitted: {c['scale']:.3f} x module sum "
                f"{c['per_module_ms']:+.4f} ms per operator")
    else:
        form = "scale, bias and per-feature reweighting of the log prediction"
    how = "set by `--correction`" if cal.get("forced") else "chosen by leave-one-out error on the K"
    return f"{cal['method']} ({how}; leave-one-out log RMSE {loo}): {form}, Spearman {cal['spearman']:.3f}"


def _deploy_md(cal: dict) -> str:
    return (f"Calibrated again right before measuring (`--phase deploy`, the same {cal['k']} architectures): "
            f"{_correction_md(cal)}. The target runs were fitted to T under it and the predicted column uses it.\n\n")


def _drift(payload: dict, measured: dict, key: str = "latency_ms") -> dict | None:
    """Calibration architectures measured at calibration time and again with the found ones:
    how much the machine's speed moved in between (median of the per-architecture ratios)."""
    cal = payload.get("deploy_calibration") or payload.get("calibration") or {}
    then = cal.get("measured_ms") or []
    now = [measured.get(f"cal{i}", {}).get(key) for i in range(len(then))]
    if not then or any(x is None for x in now):
        return None
    ratio = np.asarray(now, float) / np.asarray(then, float)
    return {"k": len(then), "median_ratio": float(np.median(ratio)), "min_ratio": float(ratio.min()),
            "max_ratio": float(ratio.max()), "log_sd": float(np.std(np.log(ratio)))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--phase", choices=("all", "search", "deploy", "measure", "report", "calibrate", "calibrate-measure",
                                        "refine-measure"), default="all")
    ap.add_argument("--predictor", help="predictor directory or shipped name (default: the shipped CPU predictor)")
    ap.add_argument("--resolution", type=int, default=96, help="deployment input resolution of the space")
    ap.add_argument("--lams", type=float, nargs="+", default=[0.0, 0.03, 0.1, 0.3, 1.0],
                    help="additive penalty strengths, per ms, in increasing order")
    ap.add_argument("--targets", type=float, nargs="+", default=[3.0, 5.0, 7.0], help="target latencies, ms")
    ap.add_argument("--target-lam", type=float, default=2.0)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--train-epochs", type=int, default=30, help="epochs to train each derived architecture")
    ap.add_argument("--rounds", type=int, default=3, help="measurement rounds per architecture")
    ap.add_argument("--overhead-repeats", type=int, default=30)
    ap.add_argument("--refine", type=int, default=0, metavar="N",
                    help="deploy: N closed-loop steps for the target runs (measure the fitted architecture, scale the "
                         "prediction by measured / predicted there, fit to T again)")
    ap.add_argument("--statistic", choices=tuple(STATISTICS), default="median",
                    help="what a measured latency is, in calibration and results: the median of the pooled samples, "
                         "or their 10th percentile (repeatable where the machine's speed wanders)")
    ap.add_argument("--append", action="store_true",
                    help="search phase: keep the runs of nas_archs.json and search only the missing settings")
    ap.add_argument("--calibrate", type=int, default=0, metavar="K",
                    help="adapt the predictor to this machine from K measured architectures spanning the space "
                         "first; 0: use it as is")
    ap.add_argument("--correction", choices=("auto", "recompose", "affine", "adaproxy"), default="auto",
                    help="with --calibrate: the correction, or auto (chosen by leave-one-out error on the K; at "
                         "search time among those a JAX latency can carry: reuse, affine, recompose). recompose "
                         "keeps the module predictions and refits the composition correction: for a predictor "
                         "trained on this machine, whose composition was fitted on other networks")
    args = ap.parse_args()
    if args.phase in ("all", "search"):
        search_phase(args)
    if args.phase == "deploy" or (args.phase == "all" and args.calibrate):
        deploy_phase(args)
    if args.phase == "calibrate-measure":  # the measuring subprocess
        calibrate_phase(args)
    if args.phase == "refine-measure":  # the measuring subprocess of --refine
        measure_phase(args, targets_only=True)
    if args.phase == "calibrate":  # measure and fit only, e.g. to choose targets before a search
        from jaxlat import load_predictor
        from profilers.spaces import mobile_space

        pred = load_predictor(args.predictor)
        print(json.dumps({k: v for k, v in calibrate(args, mobile_space(resolution=args.resolution), pred).as_json().items()
                          if k != "report"}, default=float))
    if args.phase in ("all", "measure", "deploy"):
        from profilers import MEASUREMENT_ENV

        if all(os.environ.get(k) == v for k, v in MEASUREMENT_ENV.items()) and args.phase == "measure":
            measure_phase(args)
        else:
            (RESULTS / "nas_records.jsonl").unlink(missing_ok=True)
            _measure_subprocess("measure", args)
    if args.phase in ("all", "report", "deploy"):
        report(args)


if __name__ == "__main__":
    main()
