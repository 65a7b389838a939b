"""`dreamrelation toy benchmark`, a preset of `benchmark run`: the toy experiment's settings, its
numbers, resuming, the YAML it prints, and the toy report (verdict, relation average, old results)."""

from __future__ import annotations

import hashlib
import json
import shutil
import statistics
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dreamrelation.benchmark import load_benchmark_config, plan
from dreamrelation.cli import app
from dreamrelation.testing.runner_stages import counting_stages
from dreamrelation.testing.toy import toy_reference_metrics, toy_train_config
from dreamrelation.toyworld.backbone import SHIPPED_WEIGHTS
from dreamrelation.toyworld.presets.comparison import (
    MIN_SEEDS_FOR_VERDICT,
    ablation_verdict,
    beats,
    claim_verdict,
    complete_seeds,
    model_label,
    preset_config,
    recipe_verdict,
    run_toy_benchmark,
    toy_report,
)
from dreamrelation.toyworld.presets.experiment import ExperimentConfig, evaluation_prompts

ROOT = Path(__file__).resolve().parents[2]
SMALL = {"model": "tiny", "exemplars": 3, "eval_prompts": 2, "train_steps": 2, "sampling_steps": 2}


def test_the_preset_has_the_toy_experiments_settings(tmp_path: Path) -> None:
    experiment = ExperimentConfig(**SMALL)
    rows = ["base", "direct_lora", "dreamrelation", "wo_rcl", "wo_ffn_lora"]
    config = preset_config(experiment, ["hugging"], [0, 1], rows, tmp_path)
    runs = plan(config, tmp_path, check_data=False).runs
    assert [(r.method, r.seed) for r in runs] == [(m, s) for s in (0, 1) for m in rows]
    ignored = {"output", "cache", "resume"}  # where files go, and the runner resumes interrupted trainings
    for run in runs:
        cfg = experiment.model_copy(update={"relation": "hugging", "seed": run.seed})
        # the exemplars and held-out prompts of this seed, with the experiment's own noise seeds
        assert run.data == tmp_path / "data" / "hugging" / f"seed{run.seed}"
        scenes = evaluation_prompts(cfg)
        assert [(e.prompt, e.seed) for e in run.prompts] == [(p.prompt, p.seed % 2**31) for p in scenes]
        assert run.noise_offset == 0
        if run.train is None:
            continue
        method = "direct_lora" if run.method == "direct_lora" else "dreamrelation"
        expected = toy_train_config(cfg, method, Path("c"), Path("o")).model_dump(exclude=ignored)
        if run.method == "wo_rcl":
            expected["loss"]["contrastive_weight"] = 0.0
        if run.method == "wo_ffn_lora":
            expected["lora"]["placement"] = {"relation": ["q", "k"], "subject1": ["v"], "subject2": ["v"]}
        assert run.train.model_dump(exclude=ignored) == expected, run.method
    gen = config.generation
    assert gen.num_inference_steps == experiment.sampling_steps
    assert gen.guidance_scale == experiment.guidance_scale
    assert (gen.num_frames, gen.height, gen.width, gen.lossless) == (16, 32, 32, True)


def test_the_preset_gives_the_toy_experiments_numbers_and_resumes(tmp_path: Path) -> None:
    """The oracle's numbers of the preset equal those of the toy experiment's own steps (exemplars ->
    cache -> train -> render -> oracle on the raw frames) on the same seed; a rerun does no work."""
    experiment = ExperimentConfig(**SMALL)
    calls: Counter = Counter()
    output = tmp_path / "bench"
    args = (experiment, ["hugging"], [1], ["base", "dreamrelation", "wo_rcl"], output)
    report = run_toy_benchmark(*args, command="test", show_progress=False, stages=counting_stages(calls))
    assert calls == Counter(cache=1, train=2, render=3 * 2)
    results = json.loads((output / "results.json").read_text())["hugging"]

    cfg = experiment.model_copy(update={"relation": "hugging", "seed": 1})
    reference = toy_reference_metrics(cfg, ["dreamrelation"], tmp_path / "experiment", base=False)
    expected = reference["dreamrelation"]
    for metric in ("relation_accuracy", "subject_fidelity", "appearance_leakage", "temporal_consistency"):
        assert results["dreamrelation"]["1"][f"oracle_{metric}"] == pytest.approx(expected[metric], abs=1e-12)
    assert results["dreamrelation"]["1"]["oracle_toy_fvd"] == pytest.approx(expected["toy_fvd"], abs=1e-9)

    # the toy report: one relation, no direct LoRA, so the claim is not tested; the runner's table too
    assert report == (output / "toy_benchmark.md").read_text()
    assert report.startswith("# Toy-world benchmark: hugging")
    assert "## hugging (1 complete seed)" in report and "| wo_rcl |" in report and "min of CPU" in report
    assert "Claim not tested: the run lacks `direct_lora` (the claim compares the two)." in report
    assert (output / "benchmark.md").is_file()

    # a rerun trains, renders and caches nothing
    calls.clear()
    again = run_toy_benchmark(*args, show_progress=False, stages=counting_stages(calls))
    assert again.count("| wo_rcl |") == 1
    assert calls == Counter()

    # an invocation stopped after its evaluations but before it wrote results.json (or another process
    # beside it): --report-only reads the runs' own evaluations, so its tables are the same
    (output / "results.json").unlink()
    tables = run_toy_benchmark(*args, report_only=True, show_progress=False, stages=counting_stages(calls))
    assert tables.split("made them.")[1] == report.split("min of CPU.")[1]
    assert "Report only (`--report-only`" in tables and "this invocation ran" not in tables
    assert "| dreamrelation | 0." in tables and calls == Counter()


def test_print_config_writes_a_yaml_that_benchmark_run_reads(tmp_path: Path) -> None:
    output = tmp_path / "bench"
    args = ["toy", "benchmark", "--print-config", "--model", "tiny", "--steps", "2",
            "--set", "eval_prompts=2", "--seeds", "0", "--methods", "base,direct_lora,wo_hmt",
            "--output", str(output)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    path = tmp_path / "toy.yaml"
    path.write_text(result.stdout)
    config = load_benchmark_config(path)
    experiment = ExperimentConfig(model="tiny", train_steps=2, eval_prompts=2)
    rows = ["base", "direct_lora", "wo_hmt"]
    assert config == preset_config(experiment, ["shaking_hands"], [0], rows, output)
    assert config.variants["wo_hmt"].train == {"loss.hybrid_masks": False}
    assert len(list((output / "data/shaking_hands/seed0").glob("*.mp4"))) == experiment.exemplars
    assert not (output / "runs").exists()  # nothing run


def test_the_preset_yaml_in_the_docs_is_the_presets() -> None:
    import re

    import yaml

    from dreamrelation.toyworld.presets.comparison import toy_benchmark_config

    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "docs" / "benchmark.md").read_text(), flags=re.S)
    documented = next(yaml.safe_load(b) for b in blocks if "backbone: toy" in b)
    rows = ["base", "direct_lora", "dreamrelation", "wo_hmt"]
    output = Path("runs/toy-benchmark")
    assert documented == toy_benchmark_config(ExperimentConfig(), ["hugging"], [0, 1, 2], rows, output)


def test_bad_flags_fail_in_one_line(tmp_path: Path) -> None:
    for flags, words in (
        (["--methods", "base,wo_nothing"], ["wo_nothing", "wo_hmt"]),
        (["--relation", "juggling"], ["juggling", "shaking_hands"]),
        (["--seeds", "0,x"], ["--seeds"]),
    ):
        result = CliRunner().invoke(app, ["toy", "benchmark", *flags, "--output", str(tmp_path / "o")])
        assert result.exit_code == 2, result.output
        assert all(w in result.output for w in words), result.output
        assert not (tmp_path / "o").exists()


def test_report_only_reads_the_committed_results_and_goes_beside_them(tmp_path: Path) -> None:
    """The committed results (of the preset's predecessor, converted to the runner's layout) make their
    report."""
    committed = ROOT / "docs" / "toy_benchmark.md"
    before = committed.read_bytes()
    output = tmp_path / "bench"
    output.mkdir()
    source = ROOT / "docs" / "toy_benchmark_stage3_results.json"
    shutil.copy(source, output / "results.json")
    args = ["toy", "benchmark", "--relation", "walking_towards,shaking_hands", "--seeds", "0,1,2",
            "--methods", "base,direct_lora,dreamrelation", "--output", str(output),
            "--report-only"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = (output / "toy_benchmark.md").read_text()
    assert "## Averaged over walking_towards, shaking_hands (3 complete seeds)" in report
    old = json.loads(source.read_text())["shaking_hands"]["direct_lora"]
    leakage = [old[s]["oracle_appearance_leakage"] for s in ("0", "1", "2")]
    assert f"{statistics.fmean(leakage):.3f} ± {statistics.pstdev(leakage):.3f}" in report
    assert (output / "results.json").read_bytes() == source.read_bytes()  # read, not rewritten
    assert not (output / "runs").exists() and not (output / "data").exists()
    assert committed.read_bytes() == before  # a run never overwrites the committed report by default
    elsewhere = tmp_path / "report.md"
    assert CliRunner().invoke(app, [*args, "--docs", str(elsewhere)]).exit_code == 0
    assert elsewhere.read_text().startswith("# Toy-world benchmark: 2 relations")


def _summary(ours: tuple[float, float], direct: tuple[float, float], std: float) -> dict:
    def row(values: tuple[float, float]) -> dict:
        return {"oracle_relation_accuracy": (values[0], std), "oracle_appearance_leakage": (values[1], std)}

    return {"dreamrelation": row(ours), "direct_lora": row(direct)}


def test_claim_verdict_needs_both_gaps_beyond_the_seed_spread() -> None:
    assert "**shown**" in claim_verdict(_summary((0.6, 0.1), (0.3, 0.4), 0.05))
    # Relation accuracy better, leakage not lower: not shown.
    assert "**not shown**" in claim_verdict(_summary((0.6, 0.4), (0.3, 0.4), 0.05))
    # Both better, but by less than the seed spread: not shown.
    assert "**not shown**" in claim_verdict(_summary((0.6, 0.1), (0.5, 0.2), 0.15))
    assert "not tested" in claim_verdict({"base": {}})


def test_ablation_verdict_judges_each_variant_against_dreamrelation_by_the_seed_spread() -> None:
    def row(accuracy: float, std: float) -> dict:
        return {"oracle_relation_accuracy": (accuracy, std)}

    summary = {
        "base": row(0.0, 0.0),
        "dreamrelation": row(0.30, 0.05),
        "wo_hmt": row(0.10, 0.08),  # 0.20 below, spread 0.08: holds
        "wo_rcl": row(0.25, 0.02),  # 0.05 below, spread 0.05: not shown (the gap must beat it)
        "wo_subject_lora": row(0.50, 0.10),  # 0.20 above, spread 0.10: the opposite
    }
    judged = ablation_verdict(summary, MIN_SEEDS_FOR_VERDICT)
    lines = judged.splitlines()
    assert lines[0].startswith("Ablations (the paper:")
    assert (
        lines[2] == "- wo_hmt: DreamRelation 0.300 vs 0.100 (higher by +0.200; seed std up to 0.080) → holds"
    )
    assert lines[3].endswith("0.250 (higher by +0.050; seed std up to 0.050) → not shown")
    assert lines[4].startswith("- wo_subject_lora:") and lines[4].endswith("→ **the opposite**")
    assert len(lines) == 5  # base is no variant
    too_few = ablation_verdict(summary, MIN_SEEDS_FOR_VERDICT - 1)
    assert too_few.startswith("Ablations not judged yet: 2 complete")
    assert ablation_verdict({"dreamrelation": row(0.3, 0.0), "direct_lora": row(0.4, 0.0)}, 3) == ""


def test_a_recipe_beats_another_only_by_more_than_the_larger_seed_std() -> None:
    def row(accuracy: tuple[float, float], leakage: tuple[float, float]) -> dict:
        return {"oracle_relation_accuracy": accuracy, "oracle_appearance_leakage": leakage}

    summary = {
        "direct_lora": row((0.117, 0.042), (0.047, 0.017)),
        "dreamrelation": row((0.016, 0.014), (0.081, 0.010)),
        "relation_only": row((0.300, 0.050), (0.020, 0.005)),  # +0.183 > 0.050; -0.027 > 0.017
        "relation_ffn": row((0.150, 0.040), (0.047, 0.030)),  # +0.033 < 0.042: a tie
        "dreamrelation_official_optimizer": row((0.010, 0.010), (0.200, 0.010)),  # -0.107 > 0.042
    }
    assert beats(summary, "relation_only", "direct_lora") == {
        "oracle_relation_accuracy": "beats",
        "oracle_appearance_leakage": "beats",
    }
    assert beats(summary, "relation_ffn", "direct_lora") == {
        "oracle_relation_accuracy": "ties",
        "oracle_appearance_leakage": "ties",
    }
    assert beats(summary, "dreamrelation_official_optimizer", "direct_lora") == {
        "oracle_relation_accuracy": "loses",
        "oracle_appearance_leakage": "loses",
    }
    # equal to the spread is not beyond it
    assert (
        beats({"a": row((0.2, 0.1), (0, 0)), "b": row((0.1, 0.1), (0, 0))}, "a", "b")[
            "oracle_relation_accuracy"
        ]
        == "ties"
    )
    lines = recipe_verdict(summary, MIN_SEEDS_FOR_VERDICT).splitlines()
    assert lines[0].startswith("Recipes (a row beats another")
    assert (
        "- relation_only vs direct_lora: relation accuracy 0.300 vs 0.117 → beats; "
        "leakage 0.020 vs 0.047 → beats"
    ) in lines
    assert len(lines) == 2 + 3 * 2  # three recipes, each against direct LoRA and DreamRelation
    assert recipe_verdict(summary, 1).startswith("Recipes not judged yet: 1 complete seed,")
    assert recipe_verdict({"direct_lora": summary["direct_lora"]}, 3) == ""
    # per recipe: each is judged once it has the seeds, the others say how many they have
    partly = recipe_verdict(summary, {"relation_only": 3, "relation_ffn": 1}).splitlines()
    assert partly[2].startswith("- relation_only vs direct_lora: relation accuracy 0.300 vs 0.117 → beats")
    assert len(partly) == 2 + 2 + 1 and not any(line.startswith("- relation_ffn vs") for line in partly)
    assert partly[-1] == (
        "- not judged yet, complete seeds fewer than 3: "
        "dreamrelation_official_optimizer (0), relation_ffn (1)"
    )


def test_the_report_averages_over_relations_and_judges_only_complete_seeds() -> None:
    def run(accuracy: float, leakage: float) -> dict[str, float]:
        return {"oracle_relation_accuracy": accuracy, "oracle_appearance_leakage": leakage}

    ours = {"hugging": [0.2, 0.4, 0.5], "pushing": [0.6, 1.0, 0.9]}
    results = {r: {"dreamrelation": {str(s): run(a, 0.0) for s, a in enumerate(v)}} for r, v in ours.items()}
    for r in results:
        results[r]["direct_lora"] = {str(s): run(0.0, 0.5) for s in range(3)}
    del results["hugging"]["direct_lora"]["2"]  # seed 2 is complete on pushing only
    assert complete_seeds(results, ["hugging", "pushing"], [0, 1, 2]) == [0, 1]
    methods = ["dreamrelation", "direct_lora"]
    relations = ["hugging", "pushing"]
    report = toy_report(results, ExperimentConfig(), relations, [0, 1, 2], methods, "t", (1.0, 2.0))
    averaged = report.split("## hugging")[0]
    assert "## Averaged over hugging, pushing (2 complete seeds)" in averaged
    # DreamRelation averaged per seed over both relations, then over seeds: seed 2 (0.5 + 0.9) / 2 = 0.7
    # counts too, since dreamrelation has it on both relations
    per_seed = [np.mean([ours["hugging"][s], ours["pushing"][s]]) for s in range(3)]
    assert f"| dreamrelation | {np.mean(per_seed):.3f} ± {np.std(per_seed):.3f} |" in averaged
    assert f"Claim not tested yet: 2 complete seeds, and the rule needs {MIN_SEEDS_FOR_VERDICT}" in averaged
    pushing = report.split("## pushing")[1]
    assert "(3 complete seeds)" in pushing and "**shown**" in pushing
    assert "1.0 min (wall), 2.0 min of CPU" in report
    # "shipped" names other weights after a retraining: the report says which
    weights = SHIPPED_WEIGHTS / "transformer" / "diffusion_pytorch_model.safetensors"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:12]
    assert f"base model `shipped` (transformer sha256 {digest}…)" in report
    assert model_label("/no/such/folder") == "`/no/such/folder`"
