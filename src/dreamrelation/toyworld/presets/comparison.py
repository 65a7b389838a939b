"""`dreamrelation toy benchmark`: the paper's comparison and ablations in the toy world, as a preset
of `dreamrelation benchmark run`.

The preset turns the toy experiment's settings (:class:`~dreamrelation.toyworld.presets.experiment.
ExperimentConfig`: exemplars, training steps, learning rate, rank, sampling) into a
:class:`~dreamrelation.benchmark.BenchmarkConfig`: the toy backbone, one exemplar dataset folder per
(relation, seed) (``{seed}`` in ``relations[].data``), the ablations and LoRA placements as named
``variants``, the ``toy`` prompt set scored by the oracle. It writes the exemplar folders, runs the
runner (resumable) and adds the toy report: the runner's tables with the paper's claim judged on
them (:func:`claim_verdict`, only with :data:`MIN_SEEDS_FOR_VERDICT` complete seeds).
``--print-config`` prints the same benchmark as YAML for `benchmark run`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dreamrelation import benchmark as runner
from dreamrelation.errors import ConfigError, InputError
from dreamrelation.files import atomic_folder, write_text_atomic
from dreamrelation.toyworld.presets.experiment import ExperimentConfig, exemplar_clips
from dreamrelation.toyworld.prompt_set import PROMPT_SET
from dreamrelation.toyworld.world import DEFAULT_FRAMES, DEFAULT_SIZE, RELATIONS, write_dataset_folder
from dreamrelation.training.methods.settings import TRIPLET_RECIPES

#: the toy world's ablations and LoRA placements: named variants of a training method
TOY_VARIANTS: dict[str, dict[str, Any]] = {
    "wo_hmt": {"method": "dreamrelation", "train": {"loss.hybrid_masks": False}},
    "wo_rcl": {"method": "dreamrelation", "train": {"loss.contrastive_weight": 0.0}},
    "wo_relation_lora": {
        "method": "dreamrelation",
        "train": {"lora.placement": {"subject1": ["v"], "subject2": ["v"], "ffn": ["out"]}},
    },
    "wo_subject_lora": {
        "method": "dreamrelation",
        "train": {"lora.placement": {"relation": ["q", "k"], "ffn": ["out"]}},
    },
    "wo_ffn_lora": {
        "method": "dreamrelation",
        "train": {"lora.placement": {"relation": ["q", "k"], "subject1": ["v"], "subject2": ["v"]}},
    },
    "relation_v_subject_qk": {
        "method": "dreamrelation",
        "train": {
            "lora.placement": {
                "relation": ["v"],
                "subject1": ["q", "k"],
                "subject2": ["q", "k"],
                "ffn": ["out"],
            }
        },
    },
    "relation_q_subject_kv": {
        "method": "dreamrelation",
        "train": {
            "lora.placement": {
                "relation": ["q"],
                "subject1": ["k", "v"],
                "subject2": ["k", "v"],
                "ffn": ["out"],
            }
        },
    },
    "relation_kv_subject_q": {
        "method": "dreamrelation",
        "train": {
            "lora.placement": {"relation": ["k", "v"], "subject1": ["q"], "subject2": ["q"], "ffn": ["out"]}
        },
    },
}
#: every row `toy benchmark` can run, in its default order
METHODS = (runner.BASE, "direct_lora", "dreamrelation", *TRIPLET_RECIPES, *TOY_VARIANTS)
#: the fewest seeds with which the claim is judged
MIN_SEEDS_FOR_VERDICT = 3
#: the oracle's metrics, the toy report's columns
ORACLE_METRICS = tuple(m for m in runner.METRIC_LABELS if m.startswith("oracle_"))
FPS = 8


def data_template(output: Path, relation: str) -> Path:
    """The per-seed exemplar folder of ``relation`` in ``output`` (``{seed}`` filled by the runner)."""
    return Path(output) / "data" / relation / "seed{seed}"


def toy_benchmark_config(
    experiment: ExperimentConfig,
    relations: Sequence[str],
    seeds: Sequence[int],
    methods: Sequence[str],
    output: Path,
) -> dict[str, Any]:
    """The `benchmark run` config (as YAML data) of a toy benchmark: ``experiment``'s settings for
    every relation, seed and row of ``methods`` (``base``, methods and :data:`TOY_VARIANTS` names)."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"--methods: unknown {unknown}; choose from {', '.join(METHODS)}")
    unknown = [r for r in relations if r not in RELATIONS]
    if unknown:
        raise ConfigError(f"--relation: unknown {unknown}; the toy world has: {', '.join(RELATIONS)}")
    rows = [m for m in methods if m != runner.BASE]
    if not rows:
        raise ConfigError("--methods: name at least one trained method besides base")
    default = ExperimentConfig()
    for key in ("exemplar_subjects", "exemplar_background"):
        if getattr(experiment, key) != getattr(default, key):
            # the runner's `toy` prompt set holds out the default exemplars' shapes, colours and background
            raise ConfigError(
                f"{key}: the toy prompt set is drawn for the default exemplars ({getattr(default, key)}); "
                f"remove the setting {key}"
            )
    steps = experiment.train_steps
    return {
        "model": {"backbone": "toy", "model": experiment.model, "dtype": "float32"},
        "relations": [{"name": r, "data": str(data_template(output, r))} for r in relations],
        "methods": rows,
        "variants": {name: TOY_VARIANTS[name] for name in rows if name in TOY_VARIANTS},
        "seeds": list(seeds),
        "base": runner.BASE in methods,
        "cache": {"video": {"num_frames": DEFAULT_FRAMES, "height": DEFAULT_SIZE, "width": DEFAULT_SIZE}},
        "train": {
            "max_steps": steps,
            "learning_rate": experiment.learning_rate,
            "warmup_steps": min(50, steps // 10),
            "checkpoint_every": steps,
            "lora": {"rank": experiment.rank, "alpha": float(experiment.rank)},
        },
        "prompts": {"set": PROMPT_SET, "per_relation": experiment.eval_prompts},
        "generation": {
            "num_inference_steps": experiment.sampling_steps,
            "guidance_scale": experiment.guidance_scale,
            "num_frames": DEFAULT_FRAMES,
            "height": DEFAULT_SIZE,
            "width": DEFAULT_SIZE,
            "fps": FPS,
            "lossless": True,  # the oracle reads back exactly the rendered pixels
        },
        "evaluation": {"metrics": []},  # the oracle alone
    }


def preset_config(
    experiment: ExperimentConfig,
    relations: Sequence[str],
    seeds: Sequence[int],
    methods: Sequence[str],
    output: Path,
) -> runner.BenchmarkConfig:
    """:func:`toy_benchmark_config`, validated."""
    from pydantic import ValidationError

    from dreamrelation.config import describe_validation_error

    try:
        return runner.BenchmarkConfig.model_validate(
            toy_benchmark_config(experiment, relations, seeds, methods, output)
        )
    except ValidationError as exc:
        raise ConfigError(f"toy benchmark: {describe_validation_error(exc)}") from None


def preset_yaml(
    experiment: ExperimentConfig,
    relations: Sequence[str],
    seeds: Sequence[int],
    methods: Sequence[str],
    output: Path,
    command: str = "toy benchmark",
) -> str:
    """The preset as a `benchmark run` YAML (``--print-config`` of ``dreamrelation {command}``); writes the
    exemplar folders it names, so ``dreamrelation benchmark run THAT.yaml --output OUTPUT`` runs (and
    resumes) the same benchmark."""
    import yaml

    preset_config(experiment, relations, seeds, methods, output)  # checked before anything is written
    write_exemplar_folders(experiment, relations, seeds, output)
    data = toy_benchmark_config(experiment, relations, seeds, methods, output)
    header = (
        f"# `dreamrelation {command}` as a `benchmark run` config; exemplar folders written under "
        f"{Path(output) / 'data'}\n# run: dreamrelation benchmark run THIS.yaml --output {output}\n"
    )
    return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=None)


#: the file in an exemplar folder naming what was drawn into it (a dot file: the dataset scan skips it)
EXEMPLARS_FILE = ".exemplars.json"


def write_exemplar_folders(
    experiment: ExperimentConfig, relations: Sequence[str], seeds: Sequence[int], output: Path
) -> None:
    """The exemplars of every (relation, seed) as dataset folders (as the toy experiment draws them),
    each written once and atomically. A folder already there is kept if it holds the same draw; one drawn
    with other settings (another ``exemplars`` count) is refused, since its cache and runs would be
    reused unchanged."""
    for relation in relations:
        for seed in seeds:
            folder = Path(str(data_template(output, relation)).format(seed=seed))
            cfg = experiment.model_copy(update={"relation": relation, "seed": seed})
            drawn = {
                "relation": relation,
                "seed": seed,
                "exemplars": cfg.exemplars,
                "exemplar_subjects": [list(s) for s in cfg.exemplar_subjects],
                "exemplar_background": cfg.exemplar_background,
            }
            if folder.is_dir():
                _check_exemplar_folder(folder, drawn)
                continue
            clips = exemplar_clips(cfg)
            with atomic_folder(folder) as tmp:
                names = [f"{relation}_{i:03d}" for i in range(len(clips))]
                write_dataset_folder(clips, tmp, names, fps=FPS)
                (tmp / EXEMPLARS_FILE).write_text(json.dumps(drawn, indent=1) + "\n", "utf-8")


def _check_exemplar_folder(folder: Path, drawn: dict[str, Any]) -> None:
    marker = folder / EXEMPLARS_FILE
    if not marker.is_file():  # not written by this preset (or by a version before 2026-11-23)
        raise InputError(
            folder,
            f"has no {EXEMPLARS_FILE} naming what was drawn into it, so its cache and runs cannot be checked",
            "use another --output folder, or delete this output folder to start over",
        )
    stored = json.loads(marker.read_text("utf-8"))
    differ = sorted(k for k in drawn if stored.get(k) != drawn[k])
    if differ:
        raise InputError(
            folder,
            f"holds exemplars drawn with other settings ({', '.join(differ)}); its cache and runs would be "
            "reused as they are",
            "use another --output folder, or delete this output folder to start over",
        )


def run_toy_benchmark(
    experiment: ExperimentConfig,
    relations: Sequence[str],
    seeds: Sequence[int],
    methods: Sequence[str],
    output: Path,
    *,
    command: str = "",
    docs: Path | None = None,
    report_only: bool = False,
    show_progress: bool = True,
    stages: runner.Stages | None = None,
) -> str:
    """Write the exemplar folders, run the runner on the preset's config (``report_only``: the
    tables of what is there) and write the toy report to ``docs`` (default ``output/toy_benchmark.md``);
    returns the report."""
    output = Path(output)
    config = preset_config(experiment, relations, seeds, methods, output)
    wall, cpu = time.perf_counter(), time.process_time()
    if not report_only:
        write_exemplar_folders(experiment, relations, seeds, output)
    runner.run_benchmark(
        config, output, command=command, show_progress=show_progress, stages=stages, report_only=report_only
    )
    results = runner.collect_results(runner.plan(config, output, check_data=False))
    minutes = None if report_only else ((time.perf_counter() - wall) / 60, (time.process_time() - cpu) / 60)
    report = toy_report(results, experiment, list(relations), list(seeds), list(methods), command, minutes)
    docs = docs if docs is not None else output / "toy_benchmark.md"
    write_text_atomic(docs, report)
    return report


def complete_seeds(
    results: dict[str, dict[str, dict[str, dict[str, float]]]],
    relations: Sequence[str],
    seeds: Sequence[int],
    methods: Sequence[str] = ("dreamrelation", "direct_lora"),
) -> list[int]:
    """The seeds for which every relation has a result for every one of ``methods``."""
    return [
        s for s in seeds if all(str(s) in results.get(r, {}).get(m, {}) for r in relations for m in methods)
    ]


def claim_verdict(summary: dict[str, dict[str, tuple[float, float]]]) -> str:
    """The paper's claim, tested on the summary: DreamRelation beats direct LoRA on relation accuracy
    AND has lower appearance leakage (the oracle's), each gap larger than the larger of the two
    methods' seed std."""
    missing = [f"`{m}`" for m in ("dreamrelation", "direct_lora") if m not in summary]
    if missing:
        return f"Claim not tested: the run lacks {' and '.join(missing)} (the claim compares the two)."
    ours, direct = summary["dreamrelation"], summary["direct_lora"]
    parts, shown = [], True
    for metric, better in (("oracle_relation_accuracy", 1), ("oracle_appearance_leakage", -1)):
        gap = better * (ours[metric][0] - direct[metric][0])
        spread = max(ours[metric][1], direct[metric][1])
        holds = gap > spread
        shown &= holds
        word = "higher" if better > 0 else "lower"
        parts.append(
            f"{runner.METRIC_LABELS[metric].rstrip(' ↑↓')}: DreamRelation {ours[metric][0]:.3f} vs direct "
            f"LoRA {direct[metric][0]:.3f} ({word} by {gap:+.3f}; seed std up to {spread:.3f}) → "
            + ("holds" if holds else "not shown")
        )
    verdict = "**shown**" if shown else "**not shown**"
    heading = f"Claim (DreamRelation beats direct LoRA by more than the seed spread): {verdict}."
    return heading + "\n\n" + "\n".join(f"- {part}" for part in parts)


def verdict(summary: dict[str, dict[str, tuple[float, float]]], seeds: int) -> str:
    """:func:`claim_verdict`, or why the claim is not judged yet (fewer than
    :data:`MIN_SEEDS_FOR_VERDICT` complete seeds)."""
    if "dreamrelation" not in summary or "direct_lora" not in summary:
        return claim_verdict(summary)  # says which method is missing
    if seeds < MIN_SEEDS_FOR_VERDICT:
        return (
            f"Claim not tested yet: {seeds} complete seed{'s' if seeds != 1 else ''}, and the rule needs "
            f"{MIN_SEEDS_FOR_VERDICT} for a seed spread (rerun the same command: it resumes)."
        )
    return claim_verdict(summary)


def ablation_verdict(summary: dict[str, dict[str, tuple[float, float]]], seeds: int) -> str:
    """The paper's ablation and placement tables, tested on the summary with the claim's rule: the
    full DreamRelation acts the relation out more often than each :data:`TOY_VARIANTS` row, by more
    than the larger of the two rows' seed std ("holds"); a row ahead of DreamRelation by more than that
    is "the opposite" ("" when the summary has no variant row)."""
    rows = [m for m in TOY_VARIANTS if m in summary]
    if not rows or "dreamrelation" not in summary:
        return ""
    if seeds < MIN_SEEDS_FOR_VERDICT:
        return (
            f"Ablations not judged yet: {seeds} complete seed{'s' if seeds != 1 else ''}, and the rule needs "
            f"{MIN_SEEDS_FOR_VERDICT}."
        )
    metric = "oracle_relation_accuracy"
    ours = summary["dreamrelation"][metric]
    parts = []
    for row in rows:
        theirs = summary[row][metric]
        gap, spread = ours[0] - theirs[0], max(ours[1], theirs[1])
        outcome = "holds" if gap > spread else "**the opposite**" if -gap > spread else "not shown"
        parts.append(
            f"{row}: DreamRelation {ours[0]:.3f} vs {theirs[0]:.3f} (higher by {gap:+.3f}; seed std up to "
            f"{spread:.3f}) → {outcome}"
        )
    heading = (
        "Ablations (the paper: the full DreamRelation's relation accuracy is above every ablation's and "
        "placement's; by more than the seed spread):"
    )
    return heading + "\n\n" + "\n".join(f"- {part}" for part in parts)


def beats(summary: dict[str, dict[str, tuple[float, float]]], row: str, other: str) -> dict[str, str]:
    """The comparison rule of docs/toyworld.md ("The recipes"): per metric, ``row`` "beats" ``other``
    when its mean is better (relation accuracy higher, appearance leakage lower) by more than the larger
    of the two rows' seed std, "loses" when worse by more than that, else "ties"."""
    outcome = {}
    for metric, better in (("oracle_relation_accuracy", 1), ("oracle_appearance_leakage", -1)):
        (mine, my_std), (theirs, their_std) = summary[row][metric], summary[other][metric]
        gap, spread = better * (mine - theirs), max(my_std, their_std)
        outcome[metric] = "beats" if gap > spread else "loses" if -gap > spread else "ties"
    return outcome


def recipe_verdict(summary: dict[str, dict[str, tuple[float, float]]], seeds: int | Mapping[str, int]) -> str:
    """Each :data:`TRIPLET_RECIPES` row against direct LoRA and DreamRelation by :func:`beats` ("" when
    the summary has no recipe row); a recipe that beats direct LoRA on relation accuracy is the one the
    README recommends. ``seeds``: the complete seeds, one count for every row or per recipe (counted
    with the rows it is compared with); a recipe is judged only with :data:`MIN_SEEDS_FOR_VERDICT`."""
    rows = [m for m in TRIPLET_RECIPES if m in summary]
    if not rows:
        return ""
    counts = {row: seeds if isinstance(seeds, int) else seeds.get(row, 0) for row in rows}
    judged = [row for row in rows if counts[row] >= MIN_SEEDS_FOR_VERDICT]
    waiting = [row for row in rows if counts[row] < MIN_SEEDS_FOR_VERDICT]
    if not judged and len(set(counts.values())) == 1:
        n = counts[rows[0]]
        return (
            f"Recipes not judged yet: {n} complete seed{'s' if n != 1 else ''}, and the rule needs "
            f"{MIN_SEEDS_FOR_VERDICT}."
        )
    parts = []
    for row in judged:
        for other in ("direct_lora", "dreamrelation"):
            if other not in summary:
                continue
            outcome = beats(summary, row, other)
            accuracy, leakage = "oracle_relation_accuracy", "oracle_appearance_leakage"
            parts.append(
                f"{row} vs {other}: relation accuracy {summary[row][accuracy][0]:.3f} vs "
                f"{summary[other][accuracy][0]:.3f} → {outcome[accuracy]}; "
                f"leakage {summary[row][leakage][0]:.3f} vs {summary[other][leakage][0]:.3f} → "
                f"{outcome[leakage]}"
            )
    if waiting:
        shown = ", ".join(f"{row} ({counts[row]})" for row in waiting)
        parts.append(f"not judged yet, complete seeds fewer than {MIN_SEEDS_FOR_VERDICT}: {shown}")
    heading = (
        "Recipes (a row beats another when its mean is better by more than the larger seed std; "
        "docs/toyworld.md):"
    )
    return heading + "\n\n" + "\n".join(f"- {part}" for part in parts)


def model_label(model: str) -> str:
    """``model`` as a report names it: with the first 12 hex digits of its transformer weights' sha256
    when they are on disk, since "shipped" names different weights after a retraining."""
    import hashlib

    from dreamrelation.toyworld.backbone import SHIPPED_WEIGHTS

    folder = SHIPPED_WEIGHTS if model == "shipped" else Path(model)
    weights = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    if not weights.is_file():
        return f"`{model}`"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:12]
    return f"`{model}` (transformer sha256 {digest}…)"


def toy_report(
    results: dict[str, dict[str, dict[str, dict[str, float]]]],
    experiment: ExperimentConfig,
    relations: list[str],
    seeds: list[int],
    methods: list[str],
    command: str,
    minutes: tuple[float, float] | None,
) -> str:
    """The toy report (Markdown): per scope (relation-averaged when several, then each relation) the
    runner's mean ± std table over seeds and the claim's verdict; ``minutes``: (wall, CPU) of the
    invocation that ran the runs, None for a report-only one (it ran nothing, so it times nothing)."""
    import torch

    from dreamrelation.devices import machine_description

    machine = machine_description(torch.device("cpu"))
    present = {m for r in results.values() for s in r.values() for run in s.values() for m in run}
    labels = {m: runner.METRIC_LABELS[m] for m in runner.METRIC_LABELS if m in ORACLE_METRICS or m in present}
    title = relations[0] if len(relations) == 1 else f"{len(relations)} relations"
    lines = [
        f"# Toy-world benchmark: {title}",
        "",
        *([f"Command: `{command}`  "] if command else []),
        f"Seeds: {seeds} (mean ± std over seeds, the population std: ± 0.000 with one seed); "
        f"{experiment.exemplars} exemplars, "
        f"{experiment.train_steps} training steps, {experiment.eval_prompts} evaluation prompts with "
        "held-out subjects and backgrounds per relation and seed; "
        f"base model {model_label(experiment.model)}, sampling "
        f"{experiment.sampling_steps} steps, CFG {experiment.guidance_scale:g}. Scored by the toy oracle "
        "(docs/toyworld.md); the runner's tables and raw results are beside this report (benchmark.md, "
        "results.json).  ",
        f"Machine: {machine}; this invocation ran {minutes[0]:.1f} min (wall), {minutes[1]:.1f} min of CPU."
        if minutes
        else f"Report only (`--report-only`, on {machine}): it ran nothing; "
        "the runs' machines and times are those of the invocations that made them.",
        "",
    ]
    scopes = ([("averaged", relations)] if len(relations) > 1 else []) + [(r, [r]) for r in relations]
    for scope, names in scopes:
        # complete: every row of the table has the seed (an ablation run has no direct LoRA row);
        # the verdict counts the seeds complete for the two methods it compares
        n = len(complete_seeds(results, names, seeds, methods))
        summary = runner.average_over_relations(results, names, methods, seeds, tuple(labels))
        heading = f"Averaged over {', '.join(names)}" if scope == "averaged" else scope
        lines += [
            f"## {heading} ({n} complete seed{'s' if n != 1 else ''})",
            "",
            *runner.markdown_table(summary, labels),
            "",
            verdict(summary, len(complete_seeds(results, names, seeds))),
            "",
        ]
        compared = [m for m in ("direct_lora", "dreamrelation") if m in methods]
        per_recipe = {
            m: len(complete_seeds(results, names, seeds, [m, *compared]))
            for m in methods
            if m in TRIPLET_RECIPES
        }
        for judged in (ablation_verdict(summary, n), recipe_verdict(summary, per_recipe)):
            lines += [judged, ""] if judged else []
    return "\n".join(lines)
