"""`dreamrelation benchmark run`: the table equals the per-run results, a rerun does no work, and a
bad config fails before any work, on the tiny random Mochi and a tiny random CLIP."""

from __future__ import annotations

import csv
import json
import statistics
from collections import Counter
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from dreamrelation.benchmark import (
    BenchmarkConfig,
    average_over_relations,
    load_benchmark_config,
    plan,
    run_benchmark,
)
from dreamrelation.errors import ConfigError, InputError
from dreamrelation.testing import write_two_subject_dataset
from dreamrelation.testing.runner_stages import counting_stages

METHODS = ["direct_lora"]
SEEDS = [0, 1]


def tiny_config(tmp_path: Path, clip: Path, **changes: object) -> dict:
    data = tmp_path / "data" / "shaking_hands"
    if not data.is_dir():
        write_two_subject_dataset(data, n_videos=2)
    config = {
        "model": {"backbone": "mochi", "model": "tiny", "dtype": "float32"},
        "relations": [{"name": "shaking_hands", "data": str(data)}],
        "methods": METHODS,
        "seeds": SEEDS,
        "cache": {"video": {"num_frames": 13, "height": 32, "width": 32}},
        "train": {"max_steps": 2, "warmup_steps": 0, "checkpoint_every": 2},
        "prompts": {"set": "paper", "per_relation": 1},
        "generation": {"num_inference_steps": 2, "num_frames": 13, "height": 32, "width": 32, "fps": 8},
        "evaluation": {"metrics": ["clip"], "clip_model": str(clip), "device": "cpu"},
        "device": "cpu",
    }
    config.update(changes)
    return config


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dreamrelation.testing.evaluation import write_tiny_clip

    return write_tiny_clip(tmp_path_factory.mktemp("clip"))


def test_table_equals_the_runs_and_a_rerun_does_no_work(tmp_path: Path, tiny_clip: Path) -> None:
    config = BenchmarkConfig.model_validate(tiny_config(tmp_path, tiny_clip))
    output = tmp_path / "out"
    calls: Counter = Counter()
    averaged = run_benchmark(config, output, show_progress=False, stages=counting_stages(calls))
    # one cache, every (method, seed) trained once, base + methods rendered once per seed (1 prompt)
    assert calls == Counter(cache=1, train=len(METHODS) * len(SEEDS), render=(1 + len(METHODS)) * len(SEEDS))

    # the table's numbers, recomputed from each run's own evaluation file
    rows = {(r["relation"], r["method"]): r for r in csv.DictReader((output / "benchmark.csv").open())}
    markdown = (output / "benchmark.md").read_text()
    for method in ["base", *METHODS]:
        runs = [
            json.loads((output / f"runs/shaking_hands/{method}/seed{s}/evaluation/results.json").read_text())
            for s in SEEDS
        ]
        for metric in ("clip_t", "temporal_consistency"):
            values = [run["overall"][metric] for run in runs]
            mean, std = statistics.fmean(values), statistics.pstdev(values)
            for scope in ("averaged", "shaking_hands"):
                row = rows[(scope, method)]
                assert float(row[f"{metric}_mean"]) == pytest.approx(mean, abs=1e-9)
                assert float(row[f"{metric}_std"]) == pytest.approx(std, abs=1e-9)
                assert row["n_seeds"] == str(len(SEEDS))
            assert averaged[method][metric] == pytest.approx((mean, std), abs=1e-9)
            assert f"{mean:.3f} ± {std:.3f}" in markdown
    assert rows[("averaged", "base")]["clip_t_mean"] != rows[("averaged", "direct_lora")]["clip_t_mean"]
    assert "Machine:" in markdown and "CLIP-T ↑" in markdown
    assert (output / "benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a rerun trains, renders and caches nothing and rewrites no video
    videos = sorted(output.glob("runs/**/*.mp4"))
    mtimes = [p.stat().st_mtime_ns for p in videos]
    calls.clear()
    again = run_benchmark(config, output, show_progress=False, stages=counting_stages(calls))
    assert calls == Counter()
    assert [p.stat().st_mtime_ns for p in videos] == mtimes
    assert again == averaged

    # an interrupted run: direct_lora's seed-1 videos and evaluation lost, its training kept
    run = output / "runs/shaking_hands/direct_lora/seed1"
    for path in [run / "evaluation/results.json", run / "videos/DONE.json", *run.glob("videos/*.mp4")]:
        path.unlink()
    run_benchmark(config, output, show_progress=False, stages=counting_stages(calls))
    assert calls == Counter(render=1)
    assert run_benchmark(config, output, show_progress=False) == averaged  # same seeds, same numbers

    # finished stages made with other settings are refused, not silently mixed into the table
    calls.clear()
    changed = tiny_config(
        tmp_path, tiny_clip, train={"max_steps": 3, "warmup_steps": 0, "checkpoint_every": 2}
    )
    with pytest.raises(InputError, match="other training settings"):
        run_benchmark(
            BenchmarkConfig.model_validate(changed),
            output,
            show_progress=False,
            stages=counting_stages(calls),
        )
    assert calls == Counter()

    # the CLI on the finished benchmark: nothing to do, the table on the terminal
    from dreamrelation.cli import app

    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tmp_path, tiny_clip)))
    result = CliRunner().invoke(app, ["benchmark", "run", str(path), "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert "Averaged over shaking_hands" in result.output and "benchmark.csv" in result.output


def test_average_over_relations_is_the_seed_spread_of_the_relation_mean() -> None:
    results = {
        "a": {"m": {"0": {"clip_t": 0.1}, "1": {"clip_t": 0.3}}},
        "b": {"m": {"0": {"clip_t": 0.5}, "1": {"clip_t": 0.9}}},
    }
    per_seed = [(0.1 + 0.5) / 2, (0.3 + 0.9) / 2]
    summary = average_over_relations(results, ["a", "b"], ["m"], [0, 1])
    assert summary["m"]["clip_t"] == pytest.approx((statistics.fmean(per_seed), statistics.pstdev(per_seed)))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"methods": ["dreamrelation", "lora_plus"]}, "lora_plus"),
        ({"relations": [{"name": "juggling", "data": "."}]}, "juggling"),
        ({"surprise": 1}, "surprise"),
        ({"seeds": [0, 0]}, "repeats"),
        ({"train": {"max_steps": 2, "output": "elsewhere"}}, "set by the benchmark runner"),
        ({"train": {"max_steps": -1}}, "max_steps"),
        ({"cache": {"video": {"num_frame": 13}}}, "num_frame"),
        ({"methods": ["direct_lora", "wo_hmt"]}, "unknown.*wo_hmt.*define it in variants"),
        ({"variants": {"direct_lora": {"method": "dreamrelation"}}}, "name of a method"),
        ({"variants": {"base": {"method": "dreamrelation"}}}, "name of a method"),
        ({"variants": {"a/b": {"method": "dreamrelation"}}}, "not a folder name"),
        ({"variants": {"mine": {"method": "lora_plus"}}}, "lora_plus"),
        (
            {"methods": ["mine"], "variants": {"mine": {"method": "direct_lora", "train": {"lora.rnak": 2}}}},
            r"(?s)train \(variant mine of direct_lora\).*rnak",
        ),
        ({"relations": [{"name": "shaking_hands", "data": "data/{relation}"}]}, "placeholder.*seed"),
        ({"evaluation": {"metrics": []}}, "metrics is empty"),
        (
            {"evaluation": {"metrics": ["fvd"], "fvd": {"extractor": "videomae"}}},
            r"(?s)evaluation \(shaking_hands\) \(FVD's real videos: relations\[\]\.reference",
        ),
    ],
)
def test_a_bad_config_fails_before_any_work(
    tmp_path: Path, tiny_clip: Path, change: dict, message: str
) -> None:
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tmp_path, tiny_clip, **change)))
    calls: Counter = Counter()
    with pytest.raises(ConfigError, match=message):
        run_benchmark(load_benchmark_config(path), tmp_path / "out", stages=counting_stages(calls))
    assert calls == Counter()
    assert not (tmp_path / "out").exists()


def test_fvd_reference_videos_may_be_given_per_relation(tmp_path: Path, tiny_clip: Path) -> None:
    config = tiny_config(
        tmp_path, tiny_clip, evaluation={"metrics": ["clip", "fvd"], "fvd": {"extractor": "videomae"}}
    )
    reference = tmp_path / "real"
    config["relations"][0]["reference"] = str(reference)
    plan_ = plan(BenchmarkConfig.model_validate(config), tmp_path / "out")
    evaluation = plan_.evaluation["shaking_hands"]
    assert evaluation.reference == reference and evaluation.chosen_metrics() == ["clip", "fvd"]


def test_a_missing_dataset_folder_fails_before_any_work(tmp_path: Path, tiny_clip: Path) -> None:
    config = tiny_config(tmp_path, tiny_clip)
    config["relations"] = [*config["relations"], {"name": "A055", "data": str(tmp_path / "nowhere")}]
    calls: Counter = Counter()
    with pytest.raises(InputError, match="nowhere.*hugging"):
        run_benchmark(BenchmarkConfig.model_validate(config), tmp_path / "out", stages=counting_stages(calls))
    assert calls == Counter()


def test_cli_reports_a_bad_config_in_one_line_with_exit_2(tmp_path: Path, tiny_clip: Path) -> None:
    from dreamrelation.cli import app

    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tmp_path, tiny_clip, methods=["nope"])))
    result = CliRunner().invoke(app, ["benchmark", "run", str(path), "--output", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "bench.yaml" in result.output and "methods" in result.output and "direct_lora" in result.output
    assert not (tmp_path / "out").exists()


def test_toy_backbone_adds_the_oracle_metrics(tmp_path: Path, tiny_clip: Path) -> None:
    from dreamrelation.evaluation.evaluate import read_frames
    from dreamrelation.toyworld import oracle
    from dreamrelation.toyworld.presets.experiment import ExperimentConfig, evaluation_prompts, exemplar_clips
    from dreamrelation.toyworld.presets.experiment import reference_videos as toy_references
    from dreamrelation.toyworld.world import write_dataset_folder

    exemplars = ExperimentConfig(relation="hugging", exemplars=2)
    write_dataset_folder(exemplar_clips(exemplars), tmp_path / "hugging")
    config = BenchmarkConfig.model_validate(
        {
            "model": {"backbone": "toy", "model": "tiny", "dtype": "float32"},
            "relations": [{"name": "hugging", "data": str(tmp_path / "hugging")}],
            "methods": ["dreamrelation"],
            "seeds": [0],
            "base": False,
            "cache": {"video": {"num_frames": 16, "height": 32, "width": 32}},
            "train": {"max_steps": 2, "warmup_steps": 0, "checkpoint_every": 2},
            "prompts": {"set": "toy", "per_relation": 2},
            "generation": {"num_inference_steps": 2, "num_frames": 16, "height": 32, "width": 32, "fps": 8},
            "evaluation": {"metrics": ["clip"], "clip_model": str(tiny_clip), "device": "cpu"},
            "device": "cpu",
        }
    )
    averaged = run_benchmark(config, tmp_path / "out", show_progress=False)
    # the oracle, called here on the rendered videos with the prompts' subjects and the exemplars'
    scenes = evaluation_prompts(ExperimentConfig(relation="hugging", eval_prompts=2))
    videos = sorted((tmp_path / "out/runs/hugging/dreamrelation/seed0/videos").glob("*.mp4"))
    expected = oracle.evaluate(
        [read_frames(v) for v in videos],
        [p.subjects for p in scenes],
        "hugging",
        [("person", "white"), ("person", "orange")],
        "striped",
        reference_videos=toy_references(ExperimentConfig(relation="hugging"), scenes),
        prompt_backgrounds=[p.background for p in scenes],
    )
    for metric in ("relation_accuracy", "subject_fidelity", "appearance_leakage", "toy_fvd"):
        assert averaged["dreamrelation"][f"oracle_{metric}"] == pytest.approx((expected[metric], 0.0))
    assert "Oracle appearance leakage ↓" in (tmp_path / "out/benchmark.md").read_text()


def test_the_toy_prompt_set_needs_the_toy_backbone(tmp_path: Path, tiny_clip: Path) -> None:
    with pytest.raises(ValueError, match="needs model.backbone toy"):
        BenchmarkConfig.model_validate(tiny_config(tmp_path, tiny_clip, prompts={"set": "toy"}))


def test_training_settings_merge_per_method_over_the_shared_ones(tmp_path: Path, tiny_clip: Path) -> None:
    from dreamrelation.benchmark import plan

    config = tiny_config(
        tmp_path,
        tiny_clip,
        methods=["dreamrelation", "motion_inversion"],
        train={"max_steps": 2, "lora": {"rank": 4, "alpha": 4.0}},
        method_train={"dreamrelation": {"lora.rank": 2}, "motion_inversion": {"learning_rate": 0.5}},
    )
    runs = {r.method: r.train for r in plan(BenchmarkConfig.model_validate(config), tmp_path / "o").runs}
    assert (runs["dreamrelation"].lora.rank, runs["dreamrelation"].lora.alpha) == (2, 4.0)
    assert runs["dreamrelation"].learning_rate == 2e-4  # the method's default where nothing is set
    assert (runs["motion_inversion"].learning_rate, runs["motion_inversion"].max_steps) == (0.5, 2)
    assert runs["motion_inversion"].loss.hybrid_masks is False  # MotionInversion's own default
    assert runs["base"] is None


def test_variants_are_rows_with_their_own_training_settings(tmp_path: Path, tiny_clip: Path) -> None:
    from dreamrelation.benchmark import plan

    config = tiny_config(
        tmp_path,
        tiny_clip,
        methods=["dreamrelation", "wo_hmt", "qk_only"],
        train={"max_steps": 2, "lora": {"rank": 4}},
        method_train={"dreamrelation": {"learning_rate": 0.01}},
        variants={
            "wo_hmt": {"method": "dreamrelation", "train": {"loss.hybrid_masks": False}},
            "qk_only": {"method": "direct_lora", "train": {"lora": {"rank": 2}, "max_steps": 3}},
        },
    )
    runs = {(r.method, r.seed): r for r in plan(BenchmarkConfig.model_validate(config), tmp_path / "o").runs}
    full, ablation, direct = (runs[(m, 1)].train for m in ("dreamrelation", "wo_hmt", "qk_only"))
    assert (full.method, ablation.method, direct.method) == ("dreamrelation", "dreamrelation", "direct_lora")
    assert full.loss.hybrid_masks is True and ablation.loss.hybrid_masks is False
    # a variant takes train, then its method's method_train, then its own settings
    assert ablation.learning_rate == 0.01 and ablation.lora.rank == 4 and ablation.seed == 1
    assert (direct.lora.rank, direct.max_steps, direct.learning_rate) == (2, 3, 2e-4)
    assert runs[("wo_hmt", 1)].folder == tmp_path / "o/runs/shaking_hands/wo_hmt/seed1"
    assert ablation.output == tmp_path / "o/runs/shaking_hands/wo_hmt/seed1/train"


def test_per_seed_dataset_folders_are_cached_and_trained_per_seed(tmp_path: Path) -> None:
    """``{seed}`` in a relation's data: one cache per (relation, seed), each seed trained on its own
    exemplars; a variant (alone in ``methods``) trains as its own row; the toy set draws its prompts
    per seed; a rerun does no work and a changed variant is refused."""
    from dreamrelation.generation.manifest import read_manifest
    from dreamrelation.toyworld.presets.experiment import ExperimentConfig, evaluation_prompts, exemplar_clips
    from dreamrelation.toyworld.world import write_dataset_folder

    for seed in (0, 1):
        clips = exemplar_clips(ExperimentConfig(relation="hugging", exemplars=2, seed=seed))
        write_dataset_folder(clips, tmp_path / f"hugging-{seed}")
    config = {
        "model": {"backbone": "toy", "model": "tiny", "dtype": "float32"},
        "relations": [{"name": "hugging", "data": str(tmp_path / "hugging-{seed}")}],
        "methods": ["wo_rcl"],
        "variants": {"wo_rcl": {"method": "dreamrelation", "train": {"loss": {"contrastive_weight": 0.0}}}},
        "seeds": [0, 1],
        "base": False,
        "cache": {"video": {"num_frames": 16, "height": 32, "width": 32}},
        "train": {"max_steps": 1, "warmup_steps": 0, "checkpoint_every": 1},
        "prompts": {"set": "toy", "per_relation": 2},
        "generation": {"num_inference_steps": 2, "num_frames": 16, "height": 32, "width": 32, "fps": 8},
        "evaluation": {"metrics": []},  # the oracle alone
        "device": "cpu",
    }
    output = tmp_path / "out"
    calls: Counter = Counter()
    averaged = run_benchmark(
        BenchmarkConfig.model_validate(config), output, show_progress=False, stages=counting_stages(calls)
    )
    assert calls == Counter(cache=2, train=2, render=2 * 2)
    for seed in (0, 1):
        cache = json.loads((output / f"cache/hugging/seed{seed}/DONE.json").read_text())
        assert cache["settings"]["data"][0]["path"] == str(tmp_path / f"hugging-{seed}")
        train = json.loads((output / f"runs/hugging/wo_rcl/seed{seed}/train/DONE.json").read_text())
        assert train["settings"]["loss"]["contrastive_weight"] == 0.0 and train["settings"]["seed"] == seed
        # the toy set: this seed's held-out prompts with their own noise seeds
        videos = read_manifest(output / f"runs/hugging/wo_rcl/seed{seed}/videos").videos
        scenes = evaluation_prompts(ExperimentConfig(relation="hugging", eval_prompts=2, seed=seed))
        expected = [(p.prompt, p.seed % 2**31) for p in scenes]
        assert [(v.entry.prompt, v.entry.seed) for v in videos] == expected
    assert set(averaged) == {"wo_rcl"}
    assert "oracle_toy_fvd" in averaged["wo_rcl"] and "clip_t" not in averaged["wo_rcl"]

    calls.clear()
    again = run_benchmark(
        BenchmarkConfig.model_validate(config), output, show_progress=False, stages=counting_stages(calls)
    )
    assert calls == Counter() and again == averaged
    config["variants"]["wo_rcl"]["train"] = {"loss": {"contrastive_weight": 0.5}}
    with pytest.raises(InputError, match="wo_rcl.*other training settings"):
        run_benchmark(BenchmarkConfig.model_validate(config), output, show_progress=False)
