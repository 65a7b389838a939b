"""`dreamrelation demo`, a preset of `benchmark run`: the old loop's numbers, every report artefact,
the YAML it prints, and the verdict sentence."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from dreamrelation.benchmark import load_benchmark_config
from dreamrelation.cli import app
from dreamrelation.testing.toy import toy_reference_metrics
from dreamrelation.toyworld.presets.demo import demo_config, demo_verdict, run_demo
from dreamrelation.toyworld.presets.experiment import (
    DEMO_RELATION,
    DEMO_RELATION_NOTE,
    ExperimentConfig,
    evaluation_prompts,
)

SMALL = {"model": "tiny", "exemplars": 3, "eval_prompts": 2, "train_steps": 2, "sampling_steps": 2}


def test_short_demo_gives_the_toy_experiments_numbers_and_every_artefact(tmp_path: Path) -> None:
    """Every oracle score of the three rows equals the toy experiment's own steps (cache -> train ->
    render -> oracle on the frames in memory: the demo's loop before it became a preset)."""
    cfg = ExperimentConfig(**SMALL, seed=1)
    output = tmp_path / "demo"
    summary = run_demo(cfg, output, show_progress=False)
    expected = toy_reference_metrics(cfg, ["dreamrelation", "direct_lora"], tmp_path / "reference")
    metrics = json.loads((output / "metrics.json").read_text())["metrics"]
    rows = {"Base model": "base", "DreamRelation": "dreamrelation", "Direct LoRA": "direct_lora"}
    assert list(metrics) == list(rows) and summary["metrics"] == metrics
    for label, row in rows.items():
        assert set(metrics[label]) == set(expected[row]), label
        for metric, value in expected[row].items():  # the FVD's matrix square root: last-bit noise
            assert abs(metrics[label][metric] - value) <= (1e-9 if metric == "toy_fvd" else 1e-12), metric

    # the runner's folders, and what only the demo writes
    run = output / "runs" / DEMO_RELATION
    for name in (
        "report.html", "exemplars.gif", "base.gif", "dreamrelation.gif", "direct_lora.gif",
        "ground_truth.gif", "losses.png", "analysis/attention.png", "analysis/base/subspace_vision.png",
        "analysis/lora/subspace_vision.png", "benchmark.md", f"data/{DEMO_RELATION}/seed1",
        run / "dreamrelation/seed1/train/relation_lora.safetensors",
        run / "direct_lora/seed1/train/relation_lora.safetensors", run / "base/seed1/videos/manifest.json",
    ):  # fmt: skip
        assert (output / name).exists(), name
    html = (output / "report.html").read_text()
    # the measured result comes first, before any picture
    verdict = json.loads((output / "metrics.json").read_text())["verdict"]
    assert html.index(verdict) < html.index("<img")
    # the default relation says why it is the default
    assert DEMO_RELATION_NOTE in html
    # the three models and the ground truth side by side: one table row each, the prompts once, with seeds
    comparison = html.split("<h2>Same prompts, same seeds</h2>")[1].split("<h2>")[0]
    for strip in ("ground_truth.gif", "base.gif", "dreamrelation.gif", "direct_lora.gif"):
        assert comparison.count(f"<img src='{strip}'>") == 1, strip
    assert "Base model (no LoRA)" in comparison and "Base + direct LoRA" in comparison
    prompts = evaluation_prompts(cfg)
    for p in prompts:
        assert comparison.count(f"{p.prompt} (noise seed {p.seed % 2**31})") == 1
    assert html.count(prompts[0].prompt) == 2  # the list above the strips, and the analysed prompt
    assert "Relation accuracy" in html and "analysis/attention.png" in html
    assert "<th>base model</th><th>base + DreamRelation LoRA</th>" in html
    assert set(summary["subspace"]) == {"base", "relation LoRA"}
    assert "vision" in summary["subspace"]["base"]
    assert summary["report"].endswith("report.html")


def test_print_config_writes_a_yaml_that_benchmark_run_reads(tmp_path: Path) -> None:
    output = tmp_path / "demo"
    args = ["demo", "--print-config", "--set", "model=tiny", "--set", "exemplars=3", "--relation", "hugging",
            "--output", str(output)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("# `dreamrelation demo` as a `benchmark run` config")
    path = tmp_path / "demo.yaml"
    path.write_text(result.stdout)
    config = load_benchmark_config(path)
    assert config == demo_config(ExperimentConfig(model="tiny", exemplars=3, relation="hugging"), output)
    assert (config.methods, config.base, config.seeds) == (["dreamrelation", "direct_lora"], True, [0])
    assert len(list((output / "data/hugging/seed0").glob("*.mp4"))) == 3
    assert not (output / "runs").exists()  # nothing run
    # the same output folder with another exemplar count: refused (its cache would be reused)
    result = CliRunner().invoke(app, [*args, "--set", "exemplars=4"])
    assert result.exit_code == 2
    assert "seed0" in result.output and "exemplars" in result.output and "another --output" in result.output
    assert CliRunner().invoke(app, args).exit_code == 0  # the same draw again: kept


def test_exemplar_settings_the_prompt_set_cannot_follow_are_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo", "--set", "exemplar_background=dark", "--output", str(tmp_path)])
    assert result.exit_code == 2
    assert "exemplar_background" in result.output and "striped" in result.output
    assert list(tmp_path.iterdir()) == []


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
    assert demo_verdict(metrics(0.0, 0.5, 0.25)).endswith(
        "Appearance leakage: DreamRelation 0.100, direct LoRA 0.100."
    )


def test_demo_verdict_states_every_row_shown_with_a_fourth() -> None:
    rows = {"Base model": 0.0, "DreamRelation": 0.0, "Direct LoRA": 0.25, "Relation LoRA alone": 0.5}
    metrics = {k: {"relation_accuracy": v, "appearance_leakage": 0.05} for k, v in rows.items()}
    assert demo_verdict(metrics) == (
        "DreamRelation did not change relation accuracy on new subjects (0.000); direct LoRA reached 0.250, "
        "relation LoRA alone reached 0.500. Appearance leakage: DreamRelation 0.050, direct LoRA 0.050, "
        "relation LoRA alone 0.050."
    )
    unchanged = {k: {"relation_accuracy": 0.0, "appearance_leakage": 0.0} for k in rows}
    assert demo_verdict(unchanged) == "No LoRA changed relation accuracy on new subjects (all 0.000)."


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
