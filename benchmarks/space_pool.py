"""Architecture records of random networks of the three search spaces (captured, not measured):
the pool whose distinct module configs `data/epyc_torch_1t_space.parquet` measured, so that the
predictor has seen the shapes that NAS over these spaces asks about.

  python benchmarks/space_pool.py --out runs/space_pool.jsonl
  jaxlat-profile torch --from-archs runs/space_pool.jsonl --threads 1 --utilization 0 \
      --min-run-time 0.1 --out data/epyc_torch_1t_space.parquet

Mobile space (96x96, widths in [0.5, 1.5]): each network first draws its share of skip layers
uniformly in [0, 0.9], then every other layer an op uniformly, so that shallow and deep networks
are both present (the found ones run from nearly all-skip to none). NAS-Bench-201 and FBNet: ops
uniformly. One seeded generator, in that order.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def pool(n_mobile: int = 200, n_nb201: int = 100, n_fbnet: int = 100, seed: int = 5000) -> list:
    import numpy as np

    from profilers.spaces import (
        FBNET,
        NB201_EDGES,
        NB201_OPS,
        MobileArch,
        Nb201Arch,
        mobile_space,
        space_by_name,
    )

    rng = np.random.default_rng(seed)
    mob, nb = mobile_space(resolution=96), space_by_name("nb201")
    convs = [o for o in mob.ops if o != "skip"]
    recs = []
    for i in range(n_mobile):
        p_skip = rng.uniform(0, 0.9)
        ops = tuple("skip" if rng.random() < p_skip else str(rng.choice(convs)) for _ in mob.layers())
        widths = tuple(float(round(rng.uniform(*mob.width_range), 3)) for _ in mob.stages)
        recs.append(mob.record(mob.check(MobileArch(ops, widths)), name=f"mobile{i}"))
    for i in range(n_nb201):
        recs.append(nb.record(nb.check(Nb201Arch(tuple(str(rng.choice(NB201_OPS)) for _ in NB201_EDGES))), name=f"nb{i}"))
    for i in range(n_fbnet):
        ops = tuple(str(rng.choice(FBNET.ops)) for _ in FBNET.layers())
        recs.append(FBNET.record(FBNET.check(MobileArch(ops, ())), name=f"fb{i}"))
    return recs


def main(argv=None) -> int:
    from profilers import append_record

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="records file to write (.jsonl; replaced)")
    p.add_argument("--seed", type=int, default=5000)
    args = p.parse_args(argv)
    out = Path(args.out)
    out.unlink(missing_ok=True)
    recs = pool(seed=args.seed)
    for r in recs:
        append_record(out, r)
    print(f"{len(recs)} records -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
