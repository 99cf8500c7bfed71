"""Each calibration objective on the measurements of earlier `new_machine.py` runs, nothing
measured again: `jaxlat calibrate --objective O` fitted on a copy of each run's calibration
measurements, then scored as `new_machine.py` scores it (fresh module configs against their
own test-retest, the zoo against its first and, where the run has one, its second pass).

  python benchmarks/objectives.py --work runs/new_machine_a --work runs/new_machine_b --name objectives

The bases are those a machine nobody measured would have: every shipped predictor except
one of this machine's CPU model (as in `new_machine.py`). Writes `--out/--name`.json and .md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import cli, machine, machine_markdown, write_results
from new_machine import _fmt, objectives_arg, predictor_scores, run, this_machines_shipped

import jaxlat
import profilers


def refit(work: Path, objective: str, excluded: list[str]) -> Path:
    """The run's calibration fitted again with `objective` into `work/objective_<o>` (its
    measurements copied; calibrate finds them complete and only fits)."""
    out = work / f"objective_{objective}"
    if not (out / "card.json").exists():
        shutil.copytree(work / "cal" / "data", out / "data", dirs_exist_ok=True)
    cmd = [cli("jaxlat"), "calibrate", "--out", str(out), "--objective", objective, "--no-register", "--no-progress"]
    card = json.loads((work / "cal" / "card.json").read_text())
    cmd += ["--budget-min", str(card["budget_min"])]
    cmd += ["--exclude-base", ",".join(excluded)] if excluded else []
    run(cmd)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", action="append", required=True, help="a new_machine.py --work directory (repeat)")
    p.add_argument("--objectives", default=",".join(jaxlat.CALIBRATION_OBJECTIVES), type=objectives_arg,
                   help="calibration objectives to fit and score, comma-separated (default: all)")
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--name", default="objectives")
    args = p.parse_args(argv)
    excluded = this_machines_shipped()
    results: dict[str, dict[str, object]] = {}
    for w in map(Path, args.work):
        fresh = w / "fresh.parquet"
        df = profilers.read_dataset(fresh)
        calibrated = set(profilers.read_dataset(w / "cal" / "data" / "modules.parquet")["config_key"])
        df = df[~df["config_key"].isin(calibrated)].reset_index(drop=True)
        records = profilers.load_records(w / "zoo.jsonl")
        again = profilers.load_records(w / "zoo_retest.jsonl") if (w / "zoo_retest.jsonl").exists() else []
        results[str(w)] = {}
        for o in args.objectives:
            out = refit(w, o, excluded)
            card = json.loads((out / "card.json").read_text())
            scores = predictor_scores(jaxlat.load_predictor(out / "predictor"), df, fresh, records, again)
            held = card["held_out"]["table"][0]
            results[str(w)][o] = {"chosen": card["choice"]["label"], "held_out": held, **scores}
            print(w, o, scores["modules"]["acc10"], scores["zoo"]["within10"], flush=True)
    payload = {"machine": machine(), "settings": vars(args), "excluded_bases": excluded, "results": results}
    lines = [
        "# Calibration objectives on the same measurements\n",
        machine_markdown(payload["machine"]),
        ("Each run's calibration measurements fitted again with each objective (`jaxlat calibrate "
         "--objective`; nothing measured again), bases: the shipped predictors "
         + (f"except {', '.join(excluded)} (this CPU model's)" if excluded else "") + ". Fresh modules: "
         "±10 % on the run's fresh configs, beside their own test-retest (the ceiling); zoo: within ±10 % "
         "of the first pass (second pass in brackets where measured). The card's held-out part: the "
         "calibration's own quarter, never fitted or chosen on.\n"),
        ("| run | objective | chosen | card held-out modules / networks ±10 % | fresh modules ±10 % | ceiling | "
         "zoo within ±10 % | zoo median abs. error |"),
        "|---|---|---|---|---|---|---|---|",
    ]
    for w, by in results.items():
        for o, r in by.items():
            z2 = r["zoo_second_pass"]
            lines.append(
                f"| {Path(w).name} | {o} | {r['chosen']} | {_fmt(r['held_out']['modules']['acc10'])} / "
                f"{_fmt(r['held_out']['networks']['acc10'])} | {r['modules']['acc10']:.3f} | "
                f"{r['ceiling']['acc10']:.3f} | {r['zoo']['within10']} of {r['zoo']['n']}"
                + (f" ({z2['within10']})" if z2 else "") + f" | {r['zoo']['median_abs_err']:.3f} |")
    lines += ["", (f"Command: `python benchmarks/objectives.py {' '.join(f'--work {w}' for w in args.work)} "
                   f"--objectives {','.join(args.objectives)} --name {args.name}`\n")]
    print(write_results(args.out, args.name, payload, "\n".join(lines)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
