"""The recipes' toy comparison (docs/toyworld.md, "What carries the relation"): one report from the
committed rows and the recipes' run folders.

Rows reused as the protocol says: base, direct LoRA and DreamRelation from
docs/toy_benchmark_base4_results.json; relation_ffn's walking towards, walking apart and shaking hands
from the ablation run's wo_subject_lora (docs/toy_ablations_base4_results.json) only if relation_ffn's
own walking-towards seed-0 run gives the same oracle metrics (the report prints the check; it failed on
2026-12-06, so none is reused). Everything else from ``RUNS/<recipe>`` and ``RUNS/<recipe>-s<seed>``
(``benchmarks/toy_variants.sh``), every evaluated run counted, finished invocation or not, over the
recipes' runs already in docs/toy_variants_results.json (so a later session's runs add to this one's).

    python benchmarks/toy_variants_report.py [RUNS] [--docs docs/toy_variants.md]

writes the report and its raw results (``..._results.json`` beside it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dreamrelation import benchmark as runner
from dreamrelation.files import write_text_atomic
from dreamrelation.toyworld.presets.comparison import toy_report
from dreamrelation.toyworld.presets.experiment import ExperimentConfig
from dreamrelation.toyworld.world import RELATIONS

DOCS = Path(__file__).resolve().parents[1] / "docs"
RECIPES = (
    "relation_only",
    "relation_ffn",
    "dreamrelation_inference_steps",
    "dreamrelation_official_optimizer",
)
ROWS = ("base", "direct_lora", "dreamrelation", *RECIPES)
SEEDS = (0, 1, 2)
CHECK = ("walking_towards", "0")  # relation_ffn's own run that must equal wo_subject_lora's


def merged_results(runs: Path) -> tuple[dict, str]:
    """results[relation][row][seed][metric] of every row, and the reuse check's outcome."""
    results: dict = json.loads((DOCS / "toy_benchmark_base4_results.json").read_text("utf-8"))
    ablations = json.loads((DOCS / "toy_ablations_base4_results.json").read_text("utf-8"))
    committed = DOCS / "toy_variants_results.json"  # the recipes' runs of earlier sessions
    if committed.is_file():
        for relation, rows in json.loads(committed.read_text("utf-8")).items():
            for recipe in RECIPES:
                if rows.get(recipe):
                    results.setdefault(relation, {}).setdefault(recipe, {}).update(rows[recipe])
    for recipe in RECIPES:
        for folder in (runs / recipe, *sorted(runs.glob(f"{recipe}-s[0-9]*"))):
            if not (folder / "config.json").is_file():
                continue
            config = runner.BenchmarkConfig.model_validate_json((folder / "config.json").read_text("utf-8"))
            planned = runner.plan(config, folder, check_data=False)
            for relation, rows in runner.collect_results(planned).items():
                for row, seeds in rows.items():
                    results.setdefault(relation, {}).setdefault(row, {}).update(seeds)
    check = "relation_ffn check not run yet (its walking towards, seed 0)"
    own = results.get(CHECK[0], {}).get("relation_ffn", {}).get(CHECK[1])
    if own is not None:
        reused = ablations[CHECK[0]]["wo_subject_lora"][CHECK[1]]
        differ = {k: (own[k], reused[k]) for k in reused if k in own and own[k] != reused[k]}
        if differ:  # the protocol: then every relation_ffn run is made anew, none reused
            shown = ", ".join(f"{k} {a!r} vs {b!r}" for k, (a, b) in differ.items())
            check = f"relation_ffn does NOT reproduce wo_subject_lora exactly ({shown}), so no run is reused"
        else:
            check = "relation_ffn reproduces wo_subject_lora exactly (walking towards, seed 0: every metric)"
            for relation, rows in ablations.items():
                for seed, metrics in rows["wo_subject_lora"].items():
                    results[relation].setdefault("relation_ffn", {}).setdefault(seed, metrics)
    return results, check


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="?", default="runs/toy-variants", type=Path)
    parser.add_argument("--docs", default=DOCS / "toy_variants.md", type=Path)
    args = parser.parse_args()
    results, check = merged_results(args.runs)
    experiment = ExperimentConfig(train_steps=1600)
    command = f"python benchmarks/toy_variants_report.py {args.runs}"
    report = toy_report(results, experiment, list(RELATIONS), list(SEEDS), list(ROWS), command, None)
    report = report.replace("\n\n## ", f"\n\nReuse check: {check}.\n\n## ", 1)
    # until every seed is in: the rows compared on the same seeds (each seed whose runs every row has)
    for seed in SEEDS:
        rows = [r for r in ROWS if all(str(seed) in results.get(rel, {}).get(r, {}) for rel in RELATIONS)]
        if len(rows) == len(ROWS) or len(rows) <= 3:
            continue
        part = toy_report(results, experiment, list(RELATIONS), [seed], rows, command, None)
        averaged = part[part.index("\n## ") + 1 :].split("\n## ")[0].rstrip()
        table = averaged.partition("\n")[2]
        report += f"\n## Seed {seed} alone, the rows that have it on every relation\n{table}\n"
    write_text_atomic(args.docs, report)
    raw = args.docs.with_name(args.docs.stem + "_results.json")
    write_text_atomic(raw, json.dumps(results, indent=1) + "\n")
    print(report)


if __name__ == "__main__":
    main()
