"""`dreamrelation demo`: the whole method on the toy world, on CPU, in minutes.

A preset of the benchmark runner (`dreamrelation benchmark run`), as `dreamrelation toy benchmark` is:
one relation, one seed, three rows (the base model, DreamRelation and the direct-LoRA baseline). The
preset writes the exemplars ("person-like" subjects on one background) as a dataset folder with masks,
and the runner caches it, trains both LoRAs on the shipped
toy base model, renders the relation for new subjects and backgrounds with the base model and with
each LoRA (same prompts, same seeds) and scores all three with the oracle. The demo then adds what only
it does: the Q/K/V and attention analysis, GIF strips, loss curves and ``report.html``, whose first line
states the measured result.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from dreamrelation import benchmark as runner
from dreamrelation.files import write_text_atomic
from dreamrelation.toyworld.presets.comparison import preset_config, preset_yaml, write_exemplar_folders
from dreamrelation.toyworld.presets.experiment import (
    DEMO_RELATION,
    DEMO_RELATION_NOTE,
    ExperimentConfig,
    base_backbone,
    exemplar_clips,
    reference_videos,
)
from dreamrelation.toyworld.presets.report import METRIC_LABELS, gif_strip, loss_curves, write_report
from dreamrelation.toyworld.prompt_set import toy_prompts
from dreamrelation.toyworld.world import RELATIONS

SHOWN = 8  # videos per GIF strip
#: the benchmark rows the demo runs (row -> label in the report): the base model, the paper's method
#: and its baseline, in the report's order
ROWS = {runner.BASE: "Base model", "dreamrelation": "DreamRelation", "direct_lora": "Direct LoRA"}
#: what each row's strip shows, in the report
STRIP_LABELS = {
    runner.BASE: "Base model (no LoRA)",
    "dreamrelation": "Base + DreamRelation LoRA (relation + FFN; trained with HMT + RCL)",
    "direct_lora": "Base + direct LoRA (all projections, plain loss)",
}
#: the GIF strip of each row, and of the ground truth
GIFS = {
    "truth": "ground_truth.gif",
    runner.BASE: "base.gif",
    "dreamrelation": "dreamrelation.gif",
    "direct_lora": "direct_lora.gif",
}
#: each LoRA's training loss, in the loss plot's titles
LOSS_LABELS = {"dreamrelation": "DreamRelation (mask-weighted)", "direct_lora": "Direct LoRA (plain)"}


def relation_word(relation: str) -> str:
    """The caption's verb for a relation ("shaking" for shaking_hands): the word attention maps follow."""
    template = RELATIONS[relation]
    return next(w for w in template.split() if not w.startswith("{") and w not in {"is", "are", "and"})


def analyze_toy(cfg: ExperimentConfig, lora: Path, prompt: str, output: Path) -> dict[str, object]:
    """The paper's interpretability on the toy model: Q/K/V subspaces of the base and base + LoRA
    weights, and Q/K/V feature maps and relation-word attention, base vs relation LoRA."""
    from dreamrelation.analysis.maps import (
        compare_attention,
        compare_feature_maps,
        save_attention_figure,
        save_feature_figure,
    )
    from dreamrelation.analysis.subspace import analyze_checkpoint, save_report

    folder = output / "analysis"
    backbone = base_backbone(cfg)
    weights = folder / "base_transformer"
    backbone.transformer.save_pretrained(weights)  # the analysis streams from safetensors, as for Mochi
    subspace, subspace_pngs = {}, {}
    for label, extra in (("base", {}), ("relation LoRA", {"lora": lora})):
        result = analyze_checkpoint(weights, ranks=(4, 8), **extra)
        written = save_report(result, folder / ("base" if label == "base" else "lora"))
        subspace[label] = result["average"]
        subspace_pngs[label] = [p for p in written if p.suffix == ".png"]
    # The paper looks at step 60 of 64: the same fraction of the toy sampler's steps.
    step = max(0, cfg.sampling_steps - max(1, round(cfg.sampling_steps / 16)))
    kwargs = {
        "step": step,
        "num_inference_steps": cfg.sampling_steps,
        "num_frames": 16,
        "height": 32,
        "width": 32,
        "guidance_scale": cfg.guidance_scale,
        "seed": 0,
        "show_progress": False,
    }
    base_features, lora_features = compare_feature_maps(backbone, lora, prompt, **kwargs)
    features_png = save_feature_figure(base_features, None, folder / "features.png", lora=lora_features)
    word = relation_word(cfg.relation)
    base_attention, lora_attention = compare_attention(backbone, lora, prompt, word, **kwargs)
    attention_png = save_attention_figure(base_attention, None, folder / "attention.png", lora=lora_attention)
    return {
        "subspace": subspace,
        "features_png": features_png,
        "attention_png": attention_png,
        "subspace_pngs": subspace_pngs,
        "prompt": prompt,
        "word": word,
        "step": step,
    }


def demo_verdict(metrics: dict[str, dict[str, float]]) -> str:
    """The measured result in one sentence: what each LoRA row (DreamRelation first, then direct LoRA and
    any other row shown, in order) did to relation accuracy on new subjects, and their leakage."""
    base = metrics["Base model"]["relation_accuracy"]
    loras = [row for row in metrics if row != "Base model"]
    if all(metrics[row]["relation_accuracy"] == base for row in loras):
        nobody = "Neither LoRA" if len(loras) == 2 else "No LoRA"
        return f"{nobody} changed relation accuracy on new subjects (all {base:.3f})."
    first, *others = loras
    ours = metrics[first]["relation_accuracy"]
    if ours == base:
        effect = f"did not change relation accuracy on new subjects ({base:.3f})"
    else:
        change = "raised" if ours > base else "lowered"
        effect = f"{change} relation accuracy on new subjects from {base:.3f} (base model) to {ours:.3f}"
    reached = ", ".join(
        f"{_in_sentence(row)} reached {metrics[row]['relation_accuracy']:.3f}" for row in others
    )
    leakage = ", ".join(f"{_in_sentence(row)} {metrics[row]['appearance_leakage']:.3f}" for row in loras)
    return f"{first} {effect}; {reached}. Appearance leakage: {leakage}."


def _in_sentence(row: str) -> str:
    """A row's label inside a sentence ("Direct LoRA" -> "direct LoRA"; names stay as they are)."""
    return row if row.startswith("DreamRelation") else row[0].lower() + row[1:]


def demo_config(cfg: ExperimentConfig, output: Path) -> runner.BenchmarkConfig:
    """The demo as a `benchmark run` config: :data:`ROWS` on ``cfg``'s relation and seed."""
    return preset_config(cfg, [cfg.relation], [cfg.seed], list(ROWS), output)


def demo_yaml(cfg: ExperimentConfig, output: Path) -> str:
    """:func:`demo_config` as `benchmark run` YAML (``--print-config``); writes the exemplar folder."""
    return preset_yaml(cfg, [cfg.relation], [cfg.seed], list(ROWS), output, command="demo")


def read_row(folder: Path) -> tuple[list[np.ndarray], list[str], dict[str, float]]:
    """A finished run's videos (frames read back from the lossless MP4s), the prompt ids in order,
    and every oracle score (without the ``oracle_`` prefix)."""
    from dreamrelation.evaluation.evaluate import read_frames
    from dreamrelation.generation.manifest import read_manifest

    records = read_manifest(folder / "videos").videos
    overall = json.loads((folder / "evaluation" / "results.json").read_text("utf-8"))["overall"]
    metrics = {k.removeprefix("oracle_"): float(v) for k, v in overall.items() if k.startswith("oracle_")}
    return [read_frames(r.video) for r in records], [r.entry.id for r in records], metrics


def run_demo(
    cfg: ExperimentConfig,
    output: Path,
    show_progress: bool = True,
    *,
    command: str = "",
    stages: runner.Stages | None = None,
) -> dict[str, object]:
    """Run the demo into ``output`` (resumable: finished runner stages are kept) and write its report;
    returns what ``metrics.json`` holds."""
    cfg.check()
    output = Path(output)
    config = demo_config(cfg, output)  # checked before anything is written
    console = Console(stderr=True, quiet=not show_progress)
    started = time.perf_counter()

    # 1. exemplars -> cache -> train both LoRAs -> render every row -> oracle: the benchmark runner
    console.print(f"[bold]1/3[/] exemplars, cache, training, rendering, oracle (benchmark runner) → {output}")
    write_exemplar_folders(cfg, [cfg.relation], [cfg.seed], output)
    runner.run_benchmark(config, output, command=command, show_progress=show_progress, stages=stages)
    folders = {row: runner.run_folder(output, cfg.relation, row, cfg.seed) for row in ROWS}
    videos, metrics, prompt_ids = {}, {}, []
    for row, label in ROWS.items():  # every row renders the same prompts with the same seeds
        videos[row], prompt_ids, metrics[label] = read_row(folders[row])
    entries, scenes = toy_prompts(cfg.relation, cfg.eval_prompts, cfg.seed)
    by_id = {e.id: (e, scene) for e, scene in zip(entries, scenes, strict=True)}
    entries, prompts = zip(*(by_id[i] for i in prompt_ids), strict=True)
    lora = {row: runner.trained_lora(folders[row]) for row in ROWS if row != runner.BASE}

    # 2. the Q/K/V + attention analysis of DreamRelation's LoRA
    with Progress(
        SpinnerColumn(), TextColumn("[bold]{task.description}"), TimeElapsedColumn(),
        console=console, disable=not show_progress,
    ) as progress:  # fmt: skip
        task = progress.add_task("2/3 Q/K/V + attention analysis", total=None)
        interpretability = analyze_toy(cfg, lora["dreamrelation"], prompts[0].prompt, output)
        progress.update(task, description="3/3 report: GIF strips, loss curves, report.html")
        reference = reference_videos(cfg, list(prompts))
        shown = slice(0, SHOWN)
        exemplars_gif = gif_strip([c.frames for c in exemplar_clips(cfg)[shown]], output / "exemplars.gif")
        strips = [("Ground truth (the world's render)", gif_strip(reference[shown], output / GIFS["truth"]))]
        strips += [(STRIP_LABELS[row], gif_strip(videos[row][shown], output / GIFS[row])) for row in ROWS]
        prompts_shown = [f"{p.prompt} (noise seed {e.seed})" for p, e in zip(prompts, entries, strict=True)]
        histories = {
            LOSS_LABELS[row]: json.loads((path.parent / "history.json").read_text("utf-8"))
            for row, path in lora.items()
        }
        loss_png = loss_curves(histories, output / "losses.png")
        minutes = (time.perf_counter() - started) / 60
        verdict = demo_verdict(metrics)
        notes = (
            f"<b>{verdict}</b></p><p>Relation <b>{cfg.relation}</b> learned from {cfg.exemplars} exemplars "
            f"({cfg.exemplar_subjects[0][1]} and {cfg.exemplar_subjects[1][1]} persons on a "
            f"{cfg.exemplar_background} background), {cfg.train_steps} steps; "
            f"evaluated on {len(prompts)} prompts "
            f"with new subjects and backgrounds, the same prompts and seeds for every model; "
            f"{minutes:.1f} minutes for this invocation (a rerun into the same folder resumes). One seed: "
            "`dreamrelation toy benchmark` gives the seed spread. The runner's own table and files: "
            "benchmark.md, results.json, runs/."
            + (f"</p><p>{DEMO_RELATION_NOTE}" if cfg.relation == DEMO_RELATION else "")
        )
        report = write_report(
            output,
            title=f"DreamRelation toy demo: {cfg.relation}",
            exemplars_gif=exemplars_gif,
            comparison=strips,
            prompts=prompts_shown[shown],
            metrics=metrics,
            loss_png=loss_png,
            notes=notes,
            interpretability=interpretability,
        )
        progress.update(task, description="done")
    summary: dict[str, Any] = {
        "config": cfg.model_dump(),
        "metrics": metrics,
        "verdict": verdict,
        "subspace": interpretability["subspace"],
        "minutes": minutes,
        "report": str(report),
        "runs": {ROWS[row]: str(folders[row]) for row in ROWS},
    }
    write_text_atomic(output / "metrics.json", json.dumps(summary, indent=2))

    table = Table(title=f"toy demo: {cfg.relation}")
    table.add_column("method")
    for label in METRIC_LABELS.values():
        table.add_column(label)
    for method, values in metrics.items():
        table.add_row(method, *(f"{values.get(m, float('nan')):.3f}" for m in METRIC_LABELS))
    console.print(table)
    console.print(verdict)
    console.print(f"report: {report}")
    return summary
