"""Score predictors on the measurements of an earlier `new_machine.py` run (its fresh module
configs and zoo passes), without measuring anything: for a predictor that did not exist when
the run measured, e.g. a shipped predictor trained afterwards.

  python benchmarks/rescore.py --work runs/new_machine --predictor xeon_amx_torch_1t --name new_machine_rescored

Each predictor is scored in its own statistic, as `new_machine.py` scores them: fresh modules
within ±10 % against the fresh configs' own test-retest, the zoo against its first and second
pass. The run's configs that its calibration measured are dropped, as there.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, machine_markdown, write_results
from new_machine import predictor_scores

import jaxlat
import profilers


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True, help="the new_machine.py run's --work directory")
    p.add_argument("--predictor", action="append", required=True,
                   help="shipped name or predictor directory (repeat for several)")
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--name", default="new_machine_rescored")
    args = p.parse_args(argv)
    work = Path(args.work)
    fresh = work / "fresh.parquet"
    df = profilers.read_dataset(fresh)
    measured_at = df.attrs["jaxlat"][0]["runs"][-1]["started_at"]
    calibrated = set(profilers.read_dataset(work / "cal" / "data" / "modules.parquet")["config_key"])
    df = df[~df["config_key"].isin(calibrated)].reset_index(drop=True)
    zoo = profilers.load_records(work / "zoo.jsonl")
    again_path = work / "zoo_retest.jsonl"
    again = profilers.load_records(again_path) if again_path.exists() else []
    rows = {name: predictor_scores(jaxlat.load_predictor(name), df, fresh, zoo, again) for name in args.predictor}
    payload = {"machine": machine(), "settings": vars(args), "measured_at": measured_at, "results": rows}
    lines = [
        "# Predictors scored on an earlier new-machine run's measurements\n",
        machine_markdown(payload["machine"]),
        (f"Measurements of `{args.work}` (fresh module configs measured from {measured_at}; {len(df)} of them, "
         f"{len(zoo)} zoo records); nothing measured again.\n"),
        ("| predictor | statistic | modules ±10 % | test-retest ±10 % (n) | zoo within ±10 % | zoo median abs. error | "
         "zoo median predicted / measured | zoo within ±10 %, that level removed | "
         "zoo, second pass | zoo test-retest within ±10 % |"),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        c, z, z2, zr = r["ceiling"], r["zoo"], r["zoo_second_pass"], r["zoo_retest"]
        lines.append(f"| {name} | {r['statistic']} | {r['modules']['acc10']:.3f} | {c['acc10']:.3f} ({c['n']}) | "
                     f"{z['within10']} of {z['n']} | {z['median_abs_err']:.3f} | {z['median_ratio']:.3f} | "
                     f"{z['within10_level_removed']} of {z['n']} | "
                     + (f"{z2['within10']} of {z2['n']} | " if z2 else "- | ")
                     + (f"{zr['within10']} of {zr['n']} |" if zr["n"] else "- |"))
    lines += ["", ("\"That level removed\": every zoo ratio divided by their median, a diagnostic of a level common "
              "to the whole zoo (the machine faster or slower as a whole than when the predictor was calibrated), "
              "not an accuracy: the bar reads the column \"zoo within ±10 %\".")]
    types = sorted(set().union(*(r["modules"]["per_type"] for r in rows.values())))
    lines += ["", "Fresh modules within ±10 %, per type:", "", "| module | " + " | ".join(rows) + " |",
              "|---|" + "---|" * len(rows)]
    lines += [f"| {t} | " + " | ".join(f"{r['modules']['per_type'].get(t, float('nan')):.3f}" for r in rows.values())
              + " |" for t in types]
    for name, r in rows.items():
        lines += ["", f"Per zoo record, {name} predicted / measured:", ""]
        lines += [f"- {n}: {v:.3f}" for n, v in r["zoo"]["ratio"].items()]
    lines += ["", f"Command: `python benchmarks/rescore.py {shlex.join(sys.argv[1:] if argv is None else argv)}`\n"]
    print(write_results(args.out, args.name, payload, "\n".join(lines)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
