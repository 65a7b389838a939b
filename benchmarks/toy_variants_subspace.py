"""The recipes' Q/K/V subspace numbers (docs/toyworld.md, "What carries the relation"): the toy base's
rank-r similarity of Q-K, Q-V and K-V (paper §4; mean over the 4 layers) against base + each trained
recipe's inference LoRA, for every run of one relation found in the recipes' run folders.

    python benchmarks/toy_variants_subspace.py [RUNS] [--relation walking_towards] [--rank 16]

prints a Markdown table and writes its numbers to ``docs/toy_variants_subspace.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dreamrelation.analysis.subspace import analyze_checkpoint
from dreamrelation.files import write_text_atomic
from dreamrelation.toyworld.backbone import SHIPPED_WEIGHTS
from dreamrelation.training.methods.settings import TRIPLET_RECIPES

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAIRS = ("q-k", "q-v", "k-v")


def loras(runs: Path, relation: str) -> list[tuple[str, str, Path]]:
    """(recipe, seed, inference LoRA) of every finished training run of ``relation``."""
    found = []
    for recipe in TRIPLET_RECIPES:
        pattern = f"{recipe}*/runs/{relation}/{recipe}/seed*/train/relation_lora.safetensors"
        for path in sorted(runs.glob(pattern)):
            if (path.parent / "DONE.json").is_file():
                found.append((recipe, path.parents[1].name.removeprefix("seed"), path))
    return found


def averages(result: dict, rank: int) -> dict[str, dict[str, float]]:
    """stream -> pair -> the mean over layers at ``rank``."""
    return {
        stream: {pair: pairs[pair][str(rank)] for pair in PAIRS}
        for stream, pairs in result["average"].items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="?", default="runs/toy-variants", type=Path)
    parser.add_argument("--relation", default="walking_towards")
    parser.add_argument("--rank", default=16, type=int)
    args = parser.parse_args()
    rows = {"base": averages(analyze_checkpoint(SHIPPED_WEIGHTS, ranks=[args.rank]), args.rank)}
    for recipe, seed, lora in loras(args.runs, args.relation):
        rows[f"{recipe} (seed {seed})"] = averages(
            analyze_checkpoint(SHIPPED_WEIGHTS, ranks=[args.rank], lora=lora), args.rank
        )
    header = " | ".join(
        f"{stream} {pair.upper().replace('-', '–')}" for stream in ("vision", "text") for pair in PAIRS
    )
    lines = [
        f"rank-{args.rank} subspace similarity, mean over the 4 layers "
        f"({args.relation}; base + LoRA at scale 1)",
        "",
        f"| model | {header} |",
        "|---" * 7 + "|",
    ]
    for name, values in rows.items():
        cells = " | ".join(f"{values[stream][pair]:.3f}" for stream in ("vision", "text") for pair in PAIRS)
        lines.append(f"| {name} | {cells} |")
    print("\n".join(lines))
    out = {"relation": args.relation, "rank": args.rank, "rows": rows}
    write_text_atomic(DOCS / "toy_variants_subspace.json", json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
