"""Prediction speed and memory, side by side in one run.

- rows per second on `--rows` conv2d configs (features already encoded) for MEDN, MLP and ridge
  (jit, chunked) against RandomForest (nn-Meter settings) and XGBoost predict; MLP and MEDN
  as new fits make them (with the step network, where the data has enough rows) and without
  it (`*_no_steps`, `Recipe(bins=0)`);
- single-query latency (one config, after warm-up: `jaxlat.single_query`, an ahead-of-time
  compiled executable run on the calling thread, beside a plain `jax.jit` call) and model
  size per regressor; and the plain `jax.jit` call again in a fresh process with JAX's CPU
  async dispatch off (`jax_cpu_enable_async_dispatch=False`: each call runs on the calling
  thread, no hand-off to a worker thread), what the single query's own client gives without
  changing a process-wide setting;
- peak resident memory while predicting `--mass-rows` configs end to end (configs generated
  in chunks, encoded, predicted), in a fresh process;
- MLP and MEDN rows per second against a plain jit MLP of the same layer sizes (the ceiling
  for that arithmetic; with a step network, two plain MLPs of the two networks' sizes, their
  outputs summed), on the default JAX device (CPU or GPU).

  python benchmarks/throughput.py --data data/cpu_torch_1t.parquet --out benchmarks/results
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, machine_markdown, write_results
from accuracy import size_bytes

import profilers
from jaxlat import TrainConfig, feature_schema, predict_chunks, single_query, type_arrays
from jaxlat.regressors import (
    medn_regressor,
    medn_task_view,
    mlp_regressor,
    random_forest_regressor,
    ridge_regressor,
    xgboost_regressor,
)

MODULE = "conv2d"


def _plain_mlp(layers, z, activation):
    """A plain MLP forward pass (dense layers, `activation` between them): the ceiling for MEDN's
    arithmetic on a GPU."""
    for layer in layers[:-1]:
        z = activation(z @ layer["w"] + layer["b"])
    return z @ layers[-1]["w"] + layers[-1]["b"]


def timed(fn, repeats: int = 3) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _per_call_us(q, x, reps: int) -> float:
    """Median over 5 rounds of the mean time of one call (after warm-up), in µs."""
    for i in range(20):
        q(x[i % len(x)])
    rounds = []
    for _ in range(5):
        t0 = time.perf_counter()
        for i in range(reps):
            q(x[i % len(x)])
        rounds.append((time.perf_counter() - t0) / reps * 1e6)
    return float(np.median(rounds))


def jit_queries(fitted, x) -> dict:
    """µs per plain `jax.jit` call on one config of each jittable regressor."""
    out = {}
    for name, (reg, params) in fitted.items():
        if reg.jittable:
            fj = jax.jit(functools.partial(reg.predict, jax.tree.map(jnp.asarray, params)))
            out[name] = _per_call_us(lambda v, fj=fj: np.asarray(fj(v)), x, 3000)
    return out


def sync_single_queries(data: str) -> dict:
    """`jit_queries` in a fresh process with async dispatch off (regressors trained 5 epochs
    there: the time of a query does not depend on the weights)."""
    cmd = [sys.executable, __file__, "--data", data, "--sync-single-query"]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def fit_all(df, quick: bool):
    data = {m: type_arrays(df, m) for m in sorted(set(df["module"]))}
    x, y = data[MODULE]
    names = feature_schema(MODULE).names
    tc = TrainConfig(epochs=5 if quick else 60, batch_size=256)
    regs = {
        "ridge": ridge_regressor(),
        "mlp": mlp_regressor((256, 256, 256), train=tc),
        "mlp_no_steps": mlp_regressor((256, 256, 256), train=tc, recipe={"bins": 0}),
        "random_forest": random_forest_regressor(n_jobs=-1, **({"n_estimators": 20} if quick else {})),
        "xgboost": xgboost_regressor(n_jobs=-1, **({"n_estimators": 50} if quick else {})),
    }
    fitted = {k: (r, r.fit(jax.random.key(0), x, y, names=names)) for k, r in regs.items()}
    for name, recipe in (("medn", {}), ("medn_no_steps", {"bins": 0})):
        medn = medn_regressor(train=TrainConfig(epochs=5 if quick else 60, batch_size=512), recipe=recipe)
        fitted[name] = medn_task_view(medn, medn.fit(jax.random.key(0), data), MODULE)
    return fitted, x


def throughput(fitted, x, rows: int) -> dict:
    big = np.resize(x, (rows, x.shape[1])).astype(np.float32)
    out = {}
    for name, (reg, params) in fitted.items():
        if reg.jittable:
            def run(reg=reg, params=params):
                return list(predict_chunks(reg.predict, params, [big], chunk_size=65536))
        else:
            def run(reg=reg, params=params):
                return reg.predict(params, big)
        if reg.jittable:
            run()  # compile for this chunk shape
        else:
            reg.predict(params, big[:1000])
        ts = timed(run, repeats=2)
        q = single_query(reg.predict, params) if reg.jittable else (lambda v, reg=reg, params=params: reg.predict(params, v))
        single_us = _per_call_us(q, x, 3000 if reg.jittable else 50)
        # the plain jit call the single query replaced, for comparison
        jit_us = jit_queries({name: (reg, params)}, x)[name] if reg.jittable else float("nan")
        out[name] = {
            "rows_per_s_median": rows / float(np.median(ts)),
            "rows_per_s_min": rows / max(ts),
            "rows_per_s_max": rows / min(ts),
            "single_query_us": single_us,
            "single_query_jit_us": jit_us,
            "size_bytes": size_bytes(name, params),
        }
        print(name, {k: round(v, 1) for k, v in out[name].items()}, flush=True)
        if reg.jittable:
            out[name]["single_query_path"] = q.path
    return out


def _layer_sizes(name: str, params) -> tuple[list[list[int]], object]:
    """The dense layer sizes of each network of a network regressor (the first, and the step
    network where it has one) and their activation."""
    if name == "mlp":
        nets = [params["layers"]] + ([params["steps"]["layers"]] if "steps" in params else [])
        return [[layers[0]["w"].shape[0]] + [layer["w"].shape[1] for layer in layers] for layers in nets], jax.nn.relu
    out = []
    for part in [params] + ([params["steps"]] if "steps" in params else []):
        enc = [v for k, v in sorted(part["model"]["encoder"].items())]
        sizes = [part["x_mean"].shape[1] + part["model"]["embed"]["embedding"].shape[1]] + [e["kernel"].shape[1] for e in enc]
        sizes += [w.shape[2] for _, w in sorted(part["model"]["decoder_w"].items())]
        out.append(sizes)
    return out, jax.nn.silu


def ceiling(fitted, x, rows: int) -> dict:
    """MLP's and MEDN's batched predict against a plain jitted MLP with the same layer sizes (the
    same matrix arithmetic and nothing else), `rows` rows in one call on the default device."""
    big = jnp.asarray(np.resize(x, (rows, x.shape[1])).astype(np.float32))
    res = {}
    for name in ("mlp", "medn"):
        reg, params = fitted[name]
        fn = jax.jit(jax.vmap(reg.predict, in_axes=(None, 0)))
        nets, act = _layer_sizes(name, params)
        layers = []
        for i, sizes in enumerate(nets):
            keys = jax.random.split(jax.random.key(i), len(sizes))
            layers.append([{"w": jax.random.normal(k, (a, b)) * 0.05, "b": jnp.zeros(b)}
                           for k, a, b in zip(keys, sizes[:-1], sizes[1:])])
        width = max(sizes[0] for sizes in nets)
        bigp = jnp.pad(big, ((0, 0), (0, max(0, width - big.shape[1]))))[:, :width]
        # The same arithmetic: each network's layers on the rows, their outputs summed.
        plain = jax.jit(lambda nl, z, act=act, nets=nets: sum(_plain_mlp(ls, z[:, : s[0]], act) for ls, s in zip(nl, nets)))
        out = {}
        for label, f, args in ((name, fn, (params, big)), ("plain_mlp_same_layers", plain, (layers, bigp))):
            f(*args).block_until_ready()
            ts = timed(lambda f=f, args=args: f(*args).block_until_ready(), repeats=7)
            out[label] = {"rows_per_s_median": rows / float(np.median(ts)), "rows_per_s_max": rows / min(ts)}
        out["layer_sizes"] = nets
        out["ratio"] = out[name]["rows_per_s_median"] / out["plain_mlp_same_layers"]["rows_per_s_median"]
        res[name] = out
        print("ceiling", name, out, flush=True)
    return res


_MASS = """
import resource, sys, numpy as np, jax
sys.path.insert(0, {bench!r})
import profilers, jaxlat
from jaxlat import LatencyPredictor, predict_latency_ms
pred = LatencyPredictor.load({pred!r})
m = pred.models["conv2d"]
rows, chunk = {rows}, 262144
def chunks():
    rng = np.random.default_rng(0)
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        cin = rng.integers(8, 512, n); cout = rng.integers(8, 512, n); h = rng.integers(7, 112, n)
        yield dict(cin=cin, cout=cout, h=h, w=h, kernel=rng.choice([1, 3, 5, 7], n), stride=rng.choice([1, 2], n),
                   groups=np.ones(n, int), bias=np.ones(n, bool), batch_size=np.ones(n, int))
import time
t0 = time.perf_counter()
lat = predict_latency_ms(m.regressor.predict, m.params, "conv2d", chunks(), chunk_size=65536)
dt = time.perf_counter() - t0
assert lat.shape == (rows,) and np.isfinite(lat).all()
print(dt, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def mass_memory(df, rows: int, quick: bool, tmp: Path) -> dict:
    from jaxlat import train_predictor

    pred = train_predictor(df[df["module"] == MODULE], regressor="medn", train=TrainConfig(epochs=5 if quick else 60, batch_size=512))
    pred.save(tmp / "mass_predictor")
    code = _MASS.format(bench=str(Path(__file__).parent), pred=str(tmp / "mass_predictor"), rows=rows)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    dt, rss = map(float, res.stdout.split())
    out = {"rows": rows, "seconds": dt, "rows_per_s": rows / dt, "peak_rss_mib": rss}
    print("mass", out, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--mass-rows", type=int, default=10_000_000)
    ap.add_argument("--ceiling-rows", type=int, default=65536, help="rows of the plain-MLP comparison (default 65536)")
    ap.add_argument("--ceiling-only", action="store_true", help="only the comparison with a plain MLP")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--name", default="throughput")
    ap.add_argument("--sync-single-query", action="store_true",
                    help="only print the plain jit calls' µs as JSON, with async dispatch off (used by the main run)")
    args = ap.parse_args()
    if args.sync_single_query:
        jax.config.update("jax_cpu_enable_async_dispatch", False)  # before the CPU client exists
    df = profilers.read_dataset(args.data)
    df = df[df["utilization"] == 0] if "utilization" in df else df
    if args.sync_single_query:
        fitted, x = fit_all(df, quick=True)
        print(json.dumps(jit_queries(fitted, x)))
        return
    fitted, x = fit_all(df, args.quick)
    payload = {"meta": {"machine": machine(), "args": vars(args)}}
    md = ["# Prediction throughput\n\n", machine_markdown(payload["meta"]["machine"]), "\n"]
    if not args.ceiling_only:
        payload["cpu"] = throughput(fitted, x, args.rows)
        # plain jit calls with async dispatch off (the key named when it held single queries in that mode)
        payload["single_query_sync_us"] = sync = sync_single_queries(args.data)
        print("plain jit call, async dispatch off", sync, flush=True)
        rf = payload["cpu"]["random_forest"]["rows_per_s_median"]
        md.append(f"Rows per second on {args.rows:,} {MODULE} configs (median of 2 passes, min..max), single-query latency, model size:\n\n")
        md.append("| regressor | rows/s | vs RandomForest | single query µs (`jaxlat.single_query`) | "
                  "plain `jax.jit` call µs | the same, async dispatch off | size bytes |\n"
                  "|---|---|---|---|---|---|---|\n")
        for k, v in payload["cpu"].items():
            sync_us = f"{sync[k]:.1f}" if k in sync else ""
            md.append(f"| {k} | {v['rows_per_s_median']:,.0f} ({v['rows_per_s_min']:,.0f}..{v['rows_per_s_max']:,.0f}) | "
                      f"{v['rows_per_s_median'] / rf:.1f}x | {v['single_query_us']:.1f} | "
                      f"{v['single_query_jit_us']:.1f} | {sync_us} | {v['size_bytes']:,} |\n")
        paths = sorted({v["single_query_path"] for v in payload["cpu"].values() if "single_query_path" in v})
        md.append(f"\n`jaxlat.single_query` ran its executable on: {', '.join(paths)}. Plain `jax.jit` calls with "
                  "async dispatch off ran in a fresh process (`jax.config.update(\"jax_cpu_enable_async_dispatch\", "
                  "False)` before the first JAX call).\n")
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            payload["mass"] = mass_memory(df, args.mass_rows, args.quick, Path(tmp))
        m = payload["mass"]
        md.append(f"\nEnd to end, {m['rows']:,} generated conv2d configs encoded and predicted by MEDN in chunks: "
                  f"{m['seconds']:.1f} s ({m['rows_per_s']:,.0f} rows/s), peak resident memory {m['peak_rss_mib']:.0f} MiB.\n")
    payload["ceiling"] = c = ceiling(fitted, x, args.ceiling_rows)
    md.append(f"\nMass prediction against a plain jitted MLP of the same layer sizes ({jax.devices()[0].device_kind}, "
              f"{args.ceiling_rows:,} rows in one call, median of 7):\n\n"
              "| regressor | layer sizes | its rows/s | plain MLP rows/s | ratio |\n|---|---|---|---|---|\n")
    for name, v in c.items():
        md.append(f"| {name} | {' + '.join(str(n) for n in v['layer_sizes'])} | {v[name]['rows_per_s_median']:,.0f} | "
                  f"{v['plain_mlp_same_layers']['rows_per_s_median']:,.0f} | {v['ratio']:.2f} |\n")
    path = write_results(args.out, args.name, payload, "".join(md))
    print(path.read_text())


if __name__ == "__main__":
    main()
