"""`dreamrelation demo`: the whole method on the toy world, on CPU, in minutes.

Renders exemplars of one relation ("person-like" subjects on one background), writes them as a
dataset folder with masks, caches, trains DreamRelation and the direct-LoRA baseline on the shipped
toy base model, renders the relation for new subjects and backgrounds with the base model and with
each LoRA (same prompts, same seeds), scores all three with the oracle and writes ``report.html``,
whose first line states the measured result.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from dreamrelation.toyworld.experiment import (
    ExperimentConfig,
    backbone_with_lora,
    base_backbone,
    evaluate_videos,
    evaluation_prompts,
    exemplar_clips,
    generate_videos,
    prepare_cache,
    reference_videos,
    save_json,
    train_config,
)
from dreamrelation.toyworld.report import METRIC_LABELS, gif_strip, loss_curves, write_report
from dreamrelation.toyworld.world import RELATIONS
from dreamrelation.train import Trainer

SHOWN = 8  # videos per GIF strip
#: the LoRAs the demo trains (method -> label in the report): the paper's method and its baseline
LORA_METHODS = {"dreamrelation": "DreamRelation", "direct_lora": "Direct LoRA"}


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
    weights = output / "work" / "base_transformer"
    backbone.transformer.save_pretrained(weights)  # the analysis streams from safetensors, as for Mochi
    subspace = {}
    for label, extra in (("base", {}), ("relation LoRA", {"lora": lora})):
        result = analyze_checkpoint(weights, ranks=(4, 8), **extra)
        save_report(result, folder / ("base" if label == "base" else "lora"))
        subspace[label] = result["average"]
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
        "subspace_pngs": sorted(folder.glob("*/subspace_*.png")),
        "prompt": prompt,
        "word": word,
        "step": step,
    }


def demo_verdict(metrics: dict[str, dict[str, float]]) -> str:
    """The measured result in one sentence: what each LoRA did to relation accuracy on new subjects."""
    base = metrics["Base model"]["relation_accuracy"]
    ours = metrics["DreamRelation"]["relation_accuracy"]
    direct = metrics["Direct LoRA"]["relation_accuracy"]
    if ours == base and direct == base:
        return f"Neither LoRA changed relation accuracy on new subjects (all {base:.3f})."
    if ours == base:
        effect = f"did not change relation accuracy on new subjects ({base:.3f})"
    else:
        change = "raised" if ours > base else "lowered"
        effect = f"{change} relation accuracy on new subjects from {base:.3f} (base model) to {ours:.3f}"
    leak = metrics["DreamRelation"]["appearance_leakage"], metrics["Direct LoRA"]["appearance_leakage"]
    return (
        f"DreamRelation {effect}; direct LoRA reached {direct:.3f}. Appearance leakage: "
        f"DreamRelation {leak[0]:.3f}, direct LoRA {leak[1]:.3f}."
    )


def run_demo(cfg: ExperimentConfig, output: Path, show_progress: bool = True) -> dict[str, object]:
    cfg.check()
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True, quiet=not show_progress)
    started = time.perf_counter()
    prompts = evaluation_prompts(cfg)
    reference = reference_videos(cfg, prompts)

    progress = Progress(
        TextColumn("[bold]{task.description:<22}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not show_progress,
    )
    with progress:
        stage = progress.add_task("exemplars + cache", total=1)
        cache = prepare_cache(cfg, output / "work")
        progress.advance(stage)

        # DreamRelation, and the paper's direct-LoRA baseline on the same exemplars and seed.
        runs = {}
        for method, label in LORA_METHODS.items():
            trainer = Trainer(
                train_config(cfg, method, cache, output / ("run" if method == "dreamrelation" else method))
            )
            train_task = progress.add_task(f"train {label}", total=cfg.train_steps)
            runs[method] = trainer.run(
                show_progress=False, on_step=lambda _, t=train_task: progress.advance(t)
            )
        result = runs["dreamrelation"]

        gen_task = progress.add_task("generate (base, ours, direct)", total=3 * len(prompts))
        videos = {
            "Base model": generate_videos(
                base_backbone(cfg), cfg, prompts, lambda: progress.advance(gen_task)
            )
        }
        for method, label in LORA_METHODS.items():
            backbone = backbone_with_lora(cfg, runs[method].lora_path)
            videos[label] = generate_videos(backbone, cfg, prompts, lambda: progress.advance(gen_task))
        analysis_task = progress.add_task("Q/K/V + attention analysis", total=1)
        interpretability = analyze_toy(cfg, result.lora_path, prompts[0].prompt, output)
        progress.advance(analysis_task)
        eval_task = progress.add_task("oracle evaluation", total=len(videos))
        metrics = {}
        for label, generated in videos.items():
            metrics[label] = evaluate_videos(cfg, generated, prompts, reference)
            progress.advance(eval_task)

    exemplars = exemplar_clips(cfg)
    shown = prompts[:SHOWN]
    exemplars_gif = gif_strip([c.frames for c in exemplars[:SHOWN]], output / "exemplars.gif")
    base_gif = gif_strip(videos["Base model"][:SHOWN], output / "base.gif")
    ours_gif = gif_strip(videos["DreamRelation"][:SHOWN], output / "dreamrelation.gif")
    direct_gif = gif_strip(videos["Direct LoRA"][:SHOWN], output / "direct_lora.gif")
    truth_gif = gif_strip(reference[:SHOWN], output / "ground_truth.gif")
    loss_png = loss_curves(result.history, output / "losses.png")
    minutes = (time.perf_counter() - started) / 60
    verdict = demo_verdict(metrics)
    notes = (
        f"<b>{verdict}</b></p><p>Relation <b>{cfg.relation}</b> learned from {cfg.exemplars} exemplars "
        f"({cfg.exemplar_subjects[0][1]} and {cfg.exemplar_subjects[1][1]} persons on a "
        f"{cfg.exemplar_background} background), {cfg.train_steps} steps; "
        f"evaluated on {len(prompts)} prompts "
        f"with new subjects and backgrounds, the same prompts and seeds for every model; "
        f"{minutes:.1f} minutes in all. One seed: `dreamrelation benchmark toy` gives the seed spread."
    )
    prompts_shown = [p.prompt for p in shown]
    report = write_report(
        output,
        title=f"DreamRelation toy demo: {cfg.relation}",
        exemplars_gif=exemplars_gif,
        sections=[
            ("Base model (no LoRA)", base_gif, prompts_shown),
            ("Base + DreamRelation LoRA (relation + FFN)", ours_gif, prompts_shown),
            ("Base + direct LoRA (all projections, plain loss)", direct_gif, prompts_shown),
            ("Ground truth for the same prompts", truth_gif, prompts_shown),
        ],
        metrics=metrics,
        loss_png=loss_png,
        notes=notes,
        interpretability=interpretability,
    )
    summary = {
        "config": cfg.model_dump(),
        "metrics": metrics,
        "verdict": verdict,
        "subspace": interpretability["subspace"],
        "minutes": minutes,
        "report": str(report),
    }
    save_json(summary, output / "metrics.json")

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
