"""A short CPU demo run produces every report artefact; the benchmark table is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dreamrelation.cli import app
from dreamrelation.toyworld.benchmark import (
    average_over_relations,
    claim_verdict,
    complete_seeds,
    markdown_report,
    run_benchmark,
    summarize,
)
from dreamrelation.toyworld.demo import demo_verdict, run_demo
from dreamrelation.toyworld.experiment import ExperimentConfig, evaluation_prompts

SMALL = {"model": "tiny", "exemplars": 3, "eval_prompts": 2, "train_steps": 2, "sampling_steps": 2}


def test_short_demo_writes_every_artefact(tmp_path: Path) -> None:
    summary = run_demo(ExperimentConfig(**SMALL), tmp_path, show_progress=False)
    for name in (
        "report.html",
        "exemplars.gif",
        "base.gif",
        "dreamrelation.gif",
        "direct_lora.gif",
        "ground_truth.gif",
        "losses.png",
        "metrics.json",
        "run/relation_lora.safetensors",
        "direct_lora/relation_lora.safetensors",
        "work/data/shaking_hands",
    ):
        assert (tmp_path / name).exists(), name
    metrics = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    assert set(metrics) == {"Base model", "DreamRelation", "Direct LoRA"}
    for values in metrics.values():
        assert 0 <= values["relation_accuracy"] <= 1 and values["toy_fvd"] >= 0
    html = (tmp_path / "report.html").read_text()
    assert "Relation accuracy" in html and "dreamrelation.gif" in html and "analysis/attention.png" in html
    assert "direct_lora.gif" in html and "Base model (no LoRA)" in html
    # The measured result comes first, before any picture.
    verdict = json.loads((tmp_path / "metrics.json").read_text())["verdict"]
    assert html.index(verdict) < html.index("<img")
    assert set(summary["subspace"]) == {"base", "relation LoRA"}
    assert "vision" in summary["subspace"]["base"]
    assert summary["report"].endswith("report.html")


def test_demo_verdict_states_what_each_lora_did() -> None:
    def metrics(base: float, ours: float, direct: float) -> dict[str, dict[str, float]]:
        rows = {"Base model": base, "DreamRelation": ours, "Direct LoRA": direct}
        return {k: {"relation_accuracy": v, "appearance_leakage": 0.1} for k, v in rows.items()}

    assert (
        demo_verdict(metrics(0.0, 0.0, 0.0))
        == "Neither LoRA changed relation accuracy on new subjects (all 0.000)."
    )
    raised = demo_verdict(metrics(0.0, 0.5, 0.25))
    assert raised.startswith(
        "DreamRelation raised relation accuracy on new subjects from 0.000 (base model) to 0.500"
    )
    assert "direct LoRA reached 0.250" in raised
    assert demo_verdict(metrics(0.25, 0.0, 0.25)).startswith("DreamRelation lowered")
    assert demo_verdict(metrics(0.25, 0.25, 0.5)).startswith("DreamRelation did not change relation accuracy")


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
    relations = ["shaking_hands", "hugging"]
    args = (cfg, [0], ["base", "dreamrelation"], tmp_path / "bench", "test", docs)
    run_benchmark(*args, show_progress=False, relations=relations)
    table = docs.read_text()
    assert "## Averaged over shaking_hands, hugging" in table
    assert "## shaking_hands (0 complete seeds)" in table and "## hugging" in table
    assert table.count("| dreamrelation |") == 3 and "| base |" in table and "±" in table
    assert "Machine:" in table
    # no direct LoRA run: the claim is not judged, and the table says why
    assert "Claim not tested: the run lacks `dreamrelation` or `direct_lora`" in table
    assert "**shown**" not in table
    results = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert set(results) == set(relations)
    assert all(set(results[r]) == {"base", "dreamrelation"} for r in relations)
    before = (tmp_path / "bench" / "results.json").stat().st_mtime_ns
    run_benchmark(*args, show_progress=False, relations=relations)
    assert (tmp_path / "bench" / "results.json").stat().st_mtime_ns == before  # nothing re-run
    # a relation not run yet: --report-only writes its (empty) table and runs nothing
    run_benchmark(*args, show_progress=False, relations=[*relations, "pushing"], report_only=True)
    assert (tmp_path / "bench" / "results.json").stat().st_mtime_ns == before
    assert "## pushing (0 complete seeds)" in docs.read_text()


def test_average_over_relations_is_the_seed_spread_of_the_relation_mean() -> None:
    def run(accuracy: float) -> dict[str, float]:
        return {"relation_accuracy": accuracy}

    results = {
        "hugging": {"dreamrelation": {"0": run(0.2), "1": run(0.4)}},
        "pushing": {"dreamrelation": {"0": run(0.6), "1": run(1.0), "2": run(0.9)}},
    }
    averaged = average_over_relations(results, ["hugging", "pushing"], ["dreamrelation"], [0, 1, 2])
    mean, std = averaged["dreamrelation"]["relation_accuracy"]
    # seed 0: (0.2 + 0.6) / 2 = 0.4; seed 1: (0.4 + 1.0) / 2 = 0.7; seed 2 lacks hugging: left out.
    assert mean == pytest.approx(0.55) and std == pytest.approx(0.15)
    per_relation = summarize(results["pushing"], ["dreamrelation"], [0, 1, 2])
    assert per_relation["dreamrelation"]["relation_accuracy"][0] == pytest.approx(2.5 / 3)


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


def test_the_claim_is_judged_only_with_three_complete_seeds() -> None:
    runs = {"dreamrelation": {"relation_accuracy": 0.9, "appearance_leakage": 0.0}}
    runs["direct_lora"] = {"relation_accuracy": 0.1, "appearance_leakage": 0.5}
    results = {r: {m: {"0": v, "1": v} for m, v in runs.items()} for r in ("hugging", "pushing")}
    results["pushing"]["dreamrelation"]["2"] = runs["dreamrelation"]
    assert complete_seeds(results, ["hugging", "pushing"], [0, 1, 2]) == [0, 1]
    summary = average_over_relations(results, ["hugging", "pushing"], list(runs), [0, 1, 2])
    cfg = ExperimentConfig()
    report = markdown_report(
        summary, {r: summary for r in ("hugging", "pushing")}, cfg, [0, 1, 2], "test", 1.0, {"averaged": 2}
    )
    assert "(2 complete seeds)" in report and "Claim not tested yet: 2 complete seeds" in report
    report = markdown_report(
        summary, {r: summary for r in ("hugging", "pushing")}, cfg, [0, 1, 2], "test", 1.0, {"averaged": 3}
    )
    assert "**shown**" in report
