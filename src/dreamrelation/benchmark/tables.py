"""The tables: mean ± std over seeds, per relation and averaged over relations, as Markdown, CSV and a
PNG plot."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dreamrelation.benchmark.config import BASE, METRIC_LABELS
from dreamrelation.benchmark.plan import Plan
from dreamrelation.files import atomic_target, write_text_atomic

# ----- the table ------------------------------------------------------------------------------


def summarize(
    results: dict[str, dict[str, dict[str, float]]],
    methods: Sequence[str],
    seeds: Sequence[int],
    metrics: Sequence[str] = tuple(METRIC_LABELS),
) -> dict[str, dict[str, tuple[float, float]]]:
    """One relation's results[method][seed] -> {method: {metric: (mean, std over seeds)}}."""
    summary = {}
    for method in methods:
        runs = [results[method][str(s)] for s in seeds if str(s) in results.get(method, {})]
        summary[method] = {
            m: (float(np.mean([r[m] for r in runs])), float(np.std([r[m] for r in runs])))
            for m in metrics
            if runs and all(m in r for r in runs)
        }
    return summary


def average_over_relations(
    results: dict[str, dict[str, dict[str, dict[str, float]]]],
    relations: Sequence[str],
    methods: Sequence[str],
    seeds: Sequence[int],
    metrics: Sequence[str] = tuple(METRIC_LABELS),
) -> dict[str, dict[str, tuple[float, float]]]:
    """{method: {metric: (mean, std)}} of the relation-averaged metric: for each seed the mean over
    ``relations`` (a seed counts only once every relation has it), then mean and std over seeds, so
    the std is the seed spread of the paper-style averaged number."""
    summary = {}
    for method in methods:
        per_seed = [
            [results[r][method][str(s)] for r in relations]
            for s in seeds
            if all(str(s) in results.get(r, {}).get(method, {}) for r in relations)
        ]
        summary[method] = {}
        for metric in metrics:
            if not per_seed or not all(metric in run for runs in per_seed for run in runs):
                continue
            values = [float(np.mean([run[metric] for run in runs])) for runs in per_seed]
            summary[method][metric] = (float(np.mean(values)), float(np.std(values)))
    return summary


def markdown_table(summary: dict[str, dict[str, tuple[float, float]]], labels: dict[str, str]) -> list[str]:
    """``| method | metric … |`` rows of mean ± std; a metric a method lacks is shown as –."""
    lines = ["| method | " + " | ".join(labels.values()) + " |", "|---" * (len(labels) + 1) + "|"]
    for method, metrics in summary.items():
        cells = [f"{metrics[m][0]:.3f} ± {metrics[m][1]:.3f}" if m in metrics else "–" for m in labels]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def write_tables(
    plan_: Plan, results: dict, command: str, minutes: float
) -> dict[str, dict[str, tuple[float, float]]]:
    """``benchmark.md``, ``benchmark.csv`` and ``benchmark.png`` in the output folder."""
    import torch

    from dreamrelation.devices import default_device, machine_description

    cfg, out = plan_.config, plan_.output
    relations = plan_.relations
    methods = ([BASE] if cfg.base else []) + list(cfg.methods)
    present = [
        m
        for m in METRIC_LABELS
        if any(m in run for r in results.values() for s in r.values() for run in s.values())
    ]
    labels = {m: METRIC_LABELS[m] for m in present}
    per_relation = {r: summarize(results.get(r, {}), methods, cfg.seeds, present) for r in relations}
    averaged = average_over_relations(results, relations, methods, cfg.seeds, present)
    device = torch.device(cfg.device) if cfg.device else default_device()
    gen = cfg.generation
    lines = [
        f"# Benchmark: {len(relations)} relation{'s' if len(relations) != 1 else ''} on {cfg.model.backbone}",
        "",
        *([f"Command: `{command}`  "] if command else []),
        f"Model `{cfg.model.model}` ({cfg.model.dtype}); methods {', '.join(methods)}; seeds {cfg.seeds} "
        f"(mean ± std over seeds, the population std: ± 0.000 with one seed); prompts `{cfg.prompts.set}`"
        + (f", first {cfg.prompts.per_relation} per relation" if cfg.prompts.per_relation else "")
        + f"; sampling {gen.num_inference_steps} steps, CFG {gen.guidance_scale:g}, "
        f"{gen.num_frames}x{gen.height}x{gen.width}.  ",
        f"Machine: {machine_description(device)}; this invocation ran {minutes:.1f} min.",
        "",
        f"## Averaged over {', '.join(relations)}",
        "",
        *markdown_table(averaged, labels),
        "",
    ]
    for relation, summary in per_relation.items():
        lines += [f"## {relation}", "", *markdown_table(summary, labels), ""]
    write_text_atomic(out / "benchmark.md", "\n".join(lines))
    rows = [
        {
            "relation": scope,
            "method": method,
            "n_seeds": _n_seeds(results, scope, relations, method, cfg.seeds),
        }
        | {f"{m}_mean": v[0] for m, v in values.items()}
        | {f"{m}_std": v[1] for m, v in values.items()}
        for scope, summary in [("averaged", averaged), *per_relation.items()]
        for method, values in summary.items()
    ]
    columns = ["relation", "method", "n_seeds"] + [f"{m}_{s}" for m in present for s in ("mean", "std")]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(out / "benchmark.csv", buffer.getvalue())
    plot(averaged, labels, out / "benchmark.png", title=f"averaged over {len(relations)} relation(s)")
    return averaged


def _n_seeds(results: dict, scope: str, relations: list[str], method: str, seeds: Sequence[int]) -> int:
    names = relations if scope == "averaged" else [scope]
    return sum(all(str(s) in results.get(r, {}).get(method, {}) for r in names) for s in seeds)


def plot(
    summary: dict[str, dict[str, tuple[float, float]]], labels: dict[str, str], path: Path, title: str
) -> Path:
    """One bar panel per metric: each method's mean with its seed std as error bar (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(labels) or ["none"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.2), squeeze=False)
    methods = list(summary)
    for ax, metric in zip(axes[0], metrics, strict=True):
        means = [summary[m].get(metric, (np.nan, 0.0))[0] for m in methods]
        stds = [summary[m].get(metric, (np.nan, 0.0))[1] for m in methods]
        ax.bar(range(len(methods)), means, yerr=stds, capsize=3, color="#4c72b0")
        ax.set_xticks(range(len(methods)), methods, rotation=45, ha="right", fontsize=8)
        ax.set_title(labels.get(metric, metric), fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    try:
        with atomic_target(path, ".png") as temp:
            fig.savefig(temp, dpi=100)
    finally:
        plt.close(fig)
    return path
