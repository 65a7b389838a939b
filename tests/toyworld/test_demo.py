"""A short CPU demo run produces every report artefact; the benchmark table is written."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from dreamrelation.cli import app
from dreamrelation.toyworld.benchmark import claim_verdict, run_benchmark
from dreamrelation.toyworld.demo import run_demo
from dreamrelation.toyworld.experiment import ExperimentConfig, evaluation_prompts

SMALL = {"model": "tiny", "exemplars": 3, "eval_prompts": 2, "train_steps": 2, "sampling_steps": 2}


def test_short_demo_writes_every_artefact(tmp_path: Path) -> None:
    summary = run_demo(ExperimentConfig(**SMALL), tmp_path, show_progress=False)
    for name in (
        "report.html",
        "exemplars.gif",
        "base.gif",
        "dreamrelation.gif",
        "ground_truth.gif",
        "losses.png",
        "metrics.json",
        "run/relation_lora.safetensors",
        "work/data/shaking_hands",
    ):
        assert (tmp_path / name).exists(), name
    metrics = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    assert set(metrics) == {"Base model", "DreamRelation"}
    for values in metrics.values():
        assert 0 <= values["relation_accuracy"] <= 1 and values["toy_fvd"] >= 0
    html = (tmp_path / "report.html").read_text()
    assert "Relation accuracy" in html and "dreamrelation.gif" in html and "analysis/attention.png" in html
    assert set(summary["subspace"]) == {"base", "relation LoRA"}
    assert "vision" in summary["subspace"]["base"]
    assert summary["report"].endswith("report.html")


def test_evaluation_prompts_use_new_subjects_and_backgrounds() -> None:
    cfg = ExperimentConfig()
    for p in evaluation_prompts(cfg):
        assert p.background != cfg.exemplar_background
        for shape, color in p.subjects:
            assert shape != "person" and color not in {"white", "orange"}


def test_unknown_relation_is_a_clear_error(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["demo", "--relation", "juggling", "--output", str(tmp_path)])
    assert r.exit_code == 2
    assert "juggling" in r.output and "shaking_hands" in r.output


def test_benchmark_writes_a_markdown_table_and_resumes(tmp_path: Path) -> None:
    cfg = ExperimentConfig(**SMALL)
    docs = tmp_path / "docs" / "toy.md"
    run_benchmark(cfg, [0], ["base", "dreamrelation"], tmp_path / "bench", "test", docs, show_progress=False)
    table = docs.read_text()
    assert "| dreamrelation |" in table and "| base |" in table and "±" in table
    results = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert set(results) == {"base", "dreamrelation"}
    before = (tmp_path / "bench" / "results.json").stat().st_mtime_ns
    run_benchmark(cfg, [0], ["base", "dreamrelation"], tmp_path / "bench", "test", docs, show_progress=False)
    assert (tmp_path / "bench" / "results.json").stat().st_mtime_ns == before  # nothing re-run


def test_claim_verdict_needs_both_gaps_beyond_the_seed_spread() -> None:
    def summary(ours: tuple[float, float], direct: tuple[float, float], std: float) -> dict:
        return {
            "dreamrelation": {"relation_accuracy": (ours[0], std), "appearance_leakage": (ours[1], std)},
            "direct_lora": {"relation_accuracy": (direct[0], std), "appearance_leakage": (direct[1], std)},
        }

    assert "**shown**" in claim_verdict(summary((0.6, 0.1), (0.3, 0.4), 0.05))
    # Relation accuracy better, leakage not lower: not shown.
    assert "**not shown**" in claim_verdict(summary((0.6, 0.4), (0.3, 0.4), 0.05))
    # Both better, but by less than the seed spread: not shown.
    assert "**not shown**" in claim_verdict(summary((0.6, 0.1), (0.5, 0.2), 0.15))
    assert "not tested" in claim_verdict({"base": {}})
