"""The demo's HTML report: GIF strips of exemplars and results, the metrics table, loss curves."""

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


def loss_curves(history: Sequence[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, key, title in zip(
        axes, ("reconstruction", "contrastive"), ("mask-weighted diffusion loss", "RCL"), strict=True
    ):
        values = np.array([h[key] for h in history], dtype=float)
        ax.plot(steps, values, alpha=0.3, color="tab:blue")
        window = max(1, len(values) // 20)
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1 :], smooth, color="tab:blue")
        ax.set_title(f"{title} (DreamRelation training)")
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


def metrics_table_markdown(rows: dict[str, dict[str, float]]) -> str:
    lines = [
        "| method | " + " | ".join(METRIC_LABELS.values()) + " |",
        "|---" * (len(METRIC_LABELS) + 1) + "|",
    ]
    for method, metrics in rows.items():
        cells = [f"{metrics[m]:.3f}" if m in metrics else "–" for m in METRIC_LABELS]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(
    output: Path,
    *,
    title: str,
    exemplars_gif: Path,
    sections: list[tuple[str, Path, list[str]]],
    metrics: dict[str, dict[str, float]],
    loss_png: Path,
    notes: str,
    interpretability: dict | None = None,
) -> Path:
    """``sections``: (heading, GIF strip, prompts shown in it)."""
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
    for heading, gif, prompts in sections:
        items = "".join(f"<li>{html.escape(p)}</li>" for p in prompts)
        parts += [f"<h2>{html.escape(heading)}</h2>", f"<img src='{gif.name}'>", f"<ol>{items}</ol>"]
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
                cells = [html.escape(label), stream, pair.upper(), values]
                rows += "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
    images = [result["features_png"], result["attention_png"], *result["subspace_pngs"]]
    imgs = "".join(f"<p><img src='{Path(p).relative_to(output)}' style='max-width:100%'></p>" for p in images)
    return [
        "<h2>Interpretability (paper §4)</h2>",
        "<p>Q/K/V subspace similarity of the projection weights, averaged over layers, for the base "
        "model and for base + the learned LoRA update:</p>",
        f"<table><tr><th>weights</th><th>stream</th><th>pair</th><th>similarity</th></tr>{rows}</table>",
        "<p>Feature maps (Q, K, V of the vision tokens) and attention of the word "
        f"<b>{html.escape(result['word'])}</b> at sampling step {result['step']}, for: "
        f"{html.escape(result['prompt'])}</p>",
        imgs,
    ]
