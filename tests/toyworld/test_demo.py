"""A short CPU demo run produces every report artefact."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from dreamrelation.cli import app
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
