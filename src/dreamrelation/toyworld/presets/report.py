"""The demo's HTML report: the models side by side (GIF strips), the metrics table, loss curves and the
Q/K/V + attention analysis, each plot labelled with the model it shows."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dreamrelation.data import write_gif
from dreamrelation.files import write_text_atomic

METRIC_LABELS = {
    "relation_accuracy": "Relation accuracy ↑",
    "subject_fidelity": "Subject fidelity ↑",
    "appearance_leakage": "Appearance leakage ↓",
    "temporal_consistency": "Temporal consistency ↑",
    "toy_fvd": "Toy FVD ↓",
}


def gif_strip(videos: Sequence[np.ndarray], path: Path, scale: int = 3, gap: int = 2) -> Path:
    """Videos side by side (same frame count) as one animated GIF."""
    frames = [np.asarray(v) for v in videos]
    count = min(len(v) for v in frames)
    height = frames[0].shape[1]
    spacer = np.full((count, height, gap, 3), 255, np.uint8)
    parts = []
    for v in frames:
        parts += [v[:count], spacer]
    strip = np.concatenate(parts[:-1], axis=2)
    return write_gif(strip, path, fps=8, scale=scale)


def loss_curves(histories: dict[str, Sequence[dict]], path: Path) -> Path:
    """The training losses of each LoRA (``histories``: label -> its history.json records), one panel
    per method and loss term, titled with both: the diffusion loss, and the relation contrastive loss
    (RCL) where the method has one. Each method on its own axes: a mask-weighted loss and a plain one
    differ in scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        (label, history, key, title)
        for label, history in histories.items()
        for key, title in (("reconstruction", "diffusion loss"), ("contrastive", "RCL"))
        if key == "reconstruction" or any(h.get("contrastive_terms") for h in history)
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.2), squeeze=False)
    for ax, (label, history, key, title) in zip(axes[0], panels, strict=True):
        steps = [h["step"] for h in history]
        values = np.array([h[key] for h in history], dtype=float)
        ax.plot(steps, values, alpha=0.3, color="tab:blue")
        window = max(1, len(values) // 20)
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1 :], smooth, color="tab:blue")
        ax.set_title(f"{label}: {title}", fontsize=9)
        ax.set_xlabel("training step")
        ax.set_ylabel("loss")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def metrics_table_html(rows: dict[str, dict[str, float]]) -> str:
    head = "".join(f"<th>{html.escape(METRIC_LABELS[m])}</th>" for m in METRIC_LABELS)
    body = ""
    for method, metrics in rows.items():
        cells = "".join(f"<td>{metrics[m]:.3f}</td>" if m in metrics else "<td>–</td>" for m in METRIC_LABELS)
        body += f"<tr><th>{html.escape(method)}</th>{cells}</tr>"
    return f"<table><tr><th>method</th>{head}</tr>{body}</table>"


def comparison_html(rows: Sequence[tuple[str, Path]], prompts: Sequence[str]) -> list[str]:
    """The models side by side: one GIF strip per row (``rows``: label, strip), the same prompt and
    noise seed in each column, then the prompts numbered left to right."""
    strips = "".join(
        f"<tr><th>{html.escape(label)}</th><td><img src='{gif.name}'></td></tr>" for label, gif in rows
    )
    items = "".join(f"<li>{html.escape(p)}</li>" for p in prompts)
    return [
        "<h2>Same prompts, same seeds</h2>",
        "<p>Each column is one held-out prompt rendered with the same noise seed by every model "
        "(ground truth: the world's own render of that prompt); columns left to right:</p>",
        f"<ol>{items}</ol>",
        f"<table>{strips}</table>",
    ]


def write_report(
    output: Path,
    *,
    title: str,
    exemplars_gif: Path,
    comparison: Sequence[tuple[str, Path]],
    prompts: Sequence[str],
    metrics: dict[str, dict[str, float]],
    loss_png: Path,
    notes: str,
    interpretability: dict | None = None,
) -> Path:
    """``comparison``: (model, GIF strip of ``prompts``) rows shown side by side; ``notes`` (HTML)
    opens the page, so its first sentence is the measured result."""
    parts = [
        "<!doctype html><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}img{image-rendering:pixelated}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}</style>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{notes}</p>",
        "<h2>Exemplars</h2>",
        f"<img src='{exemplars_gif.name}'>",
    ]
    parts += comparison_html(comparison, prompts)
    parts += [
        "<h2>Oracle metrics</h2>",
        metrics_table_html(metrics),
        "<h2>Training losses</h2>",
        f"<img src='{loss_png.name}'>",
    ]
    if interpretability is not None:
        parts += interpretability_html(interpretability, output)
    path = output / "report.html"
    write_text_atomic(path, "\n".join(parts))
    return path


def interpretability_html(result: dict, output: Path) -> list[str]:
    """Subspace averages (base vs base + LoRA) and the feature / attention figures."""
    rows = ""
    for label, average in result["subspace"].items():
        for stream, pairs in average.items():
            for pair, by_rank in pairs.items():
                values = ", ".join(f"r={r}: {v:.3f}" for r, v in by_rank.items())
                cells = [html.escape(_WEIGHTS.get(label, label)), stream, pair.upper(), values]
                rows += "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"

    def img(path: Path) -> str:
        return f"<img src='{Path(path).relative_to(output)}' style='max-width:100%'>"

    # per stream, the base weights' heatmap beside base + LoRA's
    subspace = result["subspace_pngs"]
    head = "".join(f"<th>{html.escape(_WEIGHTS.get(label, label))}</th>" for label in subspace)
    pngs = list(zip(*subspace.values(), strict=True))
    heatmaps = "".join("<tr>" + "".join(f"<td>{img(p)}</td>" for p in row) + "</tr>" for row in pngs)
    return [
        "<h2>Interpretability (paper §4)</h2>",
        "<p>Q/K/V subspace similarity of the projection weights, averaged over layers, for the base "
        "model and for base + the learned DreamRelation LoRA update:</p>",
        f"<table><tr><th>weights</th><th>stream</th><th>pair</th><th>similarity</th></tr>{rows}</table>",
        f"<p>Per layer:</p><table><tr>{head}</tr>{heatmaps}</table>",
        "<p>Feature maps (Q, K, V of the vision tokens) and attention of the word "
        f"<b>{html.escape(result['word'])}</b> at sampling step {result['step']}, for: "
        f"{html.escape(result['prompt'])} (upper rows: base model; lower rows: base + DreamRelation "
        "LoRA)</p>",
        f"<p>{img(result['features_png'])}</p>",
        f"<p>{img(result['attention_png'])}</p>",
    ]


#: the subspace analysis' weights, in words
_WEIGHTS = {"base": "base model", "relation LoRA": "base + DreamRelation LoRA"}
