"""`dreamrelation cache`: encode every exemplar once (latents, text conditioning, latent masks).

Frozen parts (VAE, text encoders) never run during training: the trainer reads only this cache.
Layout of a cache folder::

    manifest.json            backbone, model, geometry, and one entry per video
    items/<name>.safetensors latents (C, f, h, w), masks (3, f, h, w), text.<key> tensors, and for
                             image-to-video backbones that need them image_condition / image_embeds
    null_prompt.safetensors  text conditioning of the empty caption (caption dropout)

Each item is written atomically and carries a fingerprint of its inputs, so an interrupted run
resumes where it stopped and a changed video or setting is re-encoded.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from safetensors.torch import load_file

from dreamrelation.backbones import Backbone, default_device, load_backbone
from dreamrelation.config import CacheConfig, ModelSpec, dump_config
from dreamrelation.data import (
    VideoItem,
    check_item,
    load_subject_masks,
    read_video,
    scan_dataset,
    subjects_present,
)
from dreamrelation.data.masks import latent_masks
from dreamrelation.errors import ConfigError, InputError
from dreamrelation.files import atomic_save, inside, write_text_atomic

MASK_ORDER = ("subject1", "subject2", "relation")
MANIFEST = "manifest.json"


@dataclass
class CacheSummary:
    encoded: list[str]
    skipped: list[str]
    output: Path


def _fingerprint(item: VideoItem, config: CacheConfig) -> str:
    """Changes when the video, its caption, its masks or the encoding settings change."""
    h = hashlib.sha256()
    h.update(b"items-v2: latents + latents_std")  # caches from before the std are re-encoded
    h.update(config.model.model_dump_json().encode())
    h.update(config.video.model_dump_json().encode())
    h.update(config.relation_mask.encode())
    h.update(json.dumps(config.mask_colors, sort_keys=True).encode())  # other colours, other masks
    h.update(item.caption.encode())
    h.update(item.relation.encode())
    stat = item.video_path.stat()
    h.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    if item.mask_dir is not None:
        for png in sorted(item.mask_dir.iterdir()):
            st = png.stat()
            h.update(f"{png.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _item_key(item: VideoItem) -> str:
    return f"{item.relation}__{item.name}"


def encode_item(backbone: Backbone, item: VideoItem, config: CacheConfig) -> dict[str, torch.Tensor]:
    """Latents, text conditioning and latent masks of one exemplar (batch dimension dropped)."""
    geo = config.video
    video = read_video(
        item.video_path, geo.num_frames, geo.height, geo.width, geo.frame_stride, geo.start_frame
    )
    latents, latents_std = (t[0] for t in backbone.encode_video_posterior(video[None]))
    # the std lets training draw a fresh posterior sample per step (latent_sampling: sample)
    tensors = {"latents": latents.cpu(), "latents_std": latents_std.cpu()}
    condition = backbone.encode_image_condition(video[None])  # image-to-video backbones that need more
    if condition is not None:
        tensors["image_condition"] = condition[0].cpu()
    image_embeds = backbone.encode_image_embeds(video[None])  # backbones with an image encoder
    if image_embeds is not None:
        tensors["image_embeds"] = image_embeds[0].cpu()
    for key, value in backbone.encode_prompts([item.caption]).items():
        tensors[f"text.{key}"] = value[0].cpu()
    if item.mask_dir is not None:
        frame_indices = [geo.start_frame + i * geo.frame_stride for i in range(geo.num_frames)]
        colors = [config.mask_colors["subject1"], config.mask_colors["subject2"]]
        frame_masks = load_subject_masks(item, frame_indices, geo.height, geo.width, colors=colors)
        subjects_present(frame_masks, item.mask_dir, colors)
        try:
            masks = latent_masks(
                frame_masks,
                backbone.frame_groups(geo.num_frames),
                tuple(latents.shape[-2:]),
                config.relation_mask,
            )
        except ValueError as exc:
            raise InputError(
                item.mask_dir, str(exc), "regenerate the masks for every frame of the video"
            ) from exc
        mask_stack = torch.stack([masks[k] for k in MASK_ORDER])
        if tuple(mask_stack.shape[1:]) != tuple(latents.shape[1:]):
            raise InputError(
                item.mask_dir,
                f"latent masks have shape {tuple(mask_stack.shape[1:])}, latents {tuple(latents.shape[1:])}",
                f"use num_frames that fit the VAE's temporal grouping ({backbone.temporal_factor}k + 1)",
            )
        tensors["masks"] = mask_stack
    return tensors


def build_cache(
    config: CacheConfig, backbone: Backbone | None = None, show_progress: bool = True
) -> CacheSummary:
    """Encode every video of every data source into ``config.output``; resumable."""
    items: list[VideoItem] = []
    for source in config.data:
        items += scan_dataset(source.path, relation=source.relation, require_masks=config.require_masks)
    names = [_item_key(i) for i in items]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise InputError(
            config.data[0].path, f"two videos share the name/relation {sorted(dupes)}", "rename one"
        )
    geo = config.video
    colors = [config.mask_colors["subject1"], config.mask_colors["subject2"]]
    # Validate everything before the (slow) model loads: a bad file fails in seconds, not hours.
    for item in items:
        check_item(item, geo.num_frames, geo.frame_stride, geo.start_frame, colors=colors)

    out = Path(config.output)
    _refuse_other_data(out, config)
    out.mkdir(parents=True, exist_ok=True)
    if backbone is None:
        spec = config.model
        device = config.device or default_device()
        backbone = load_backbone(spec.backbone, spec.model, spec.dtype, spec.max_sequence_length, device)
    if config.vae_tiling and hasattr(backbone.vae, "enable_tiling"):
        backbone.vae.enable_tiling()
    backbone.frame_groups(geo.num_frames)  # raises early if the frame count cannot be encoded

    manifest_items = []
    encoded, skipped = [], []
    progress = Progress(
        TextColumn("[bold]cache"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeRemainingColumn(),
        disable=not show_progress,
    )
    with progress:
        task = progress.add_task("", total=len(items))
        for item in items:
            key = _item_key(item)
            path = inside(out / "items", f"{key}.safetensors", f"cache item of {item.video_path}")
            fingerprint = _fingerprint(item, config)
            progress.update(task, description=key)
            if path.exists() and _stored_fingerprint(path) == fingerprint:
                skipped.append(key)
            else:
                tensors = encode_item(backbone, item, config)
                meta = {"caption": item.caption, "relation": item.relation, "fingerprint": fingerprint}
                atomic_save(tensors, path, meta)
                encoded.append(key)
            manifest_items.append(
                {
                    "key": key,
                    "name": item.name,
                    "relation": item.relation,
                    "caption": item.caption,
                    "video": str(item.video_path),
                    "file": f"items/{key}.safetensors",
                    "fingerprint": fingerprint,
                }
            )
            progress.advance(task)

    null = {f"text.{k}": v[0].cpu() for k, v in backbone.encode_prompts([""]).items()}
    atomic_save(null, out / "null_prompt.safetensors")
    manifest = {
        "backbone": backbone.name,
        "model": config.model.model,
        "video": config.video.model_dump(),
        "relation_mask": config.relation_mask,
        "mask_order": list(MASK_ORDER),
        "config": json.loads(dump_config(config)),
        "items": manifest_items,
    }
    write_text_atomic(out / MANIFEST, json.dumps(manifest, indent=2))
    return CacheSummary(encoded=encoded, skipped=skipped, output=out)


def _refuse_other_data(out: Path, config: CacheConfig) -> None:
    """A cache folder holds the data of one `cache` command: caching other data into it would drop
    the first data's items from the manifest (and a run resumed on it would train on other data)."""
    manifest_path = out / MANIFEST
    if not manifest_path.is_file():
        return
    try:
        sources = json.loads(manifest_path.read_text(encoding="utf-8"))["config"]["data"]
        before = {str(Path(d["path"]).resolve()) for d in sources}
    except (ValueError, KeyError, TypeError):
        return  # a damaged manifest is rewritten whole
    now = {str(Path(d.path).resolve()) for d in config.data}
    missing = sorted(before - now)
    if missing:
        raise ConfigError(
            f"{out}: this cache already holds the data of {', '.join(missing)}, which this command does not "
            "include; caching other data here would drop it. Fix: give every dataset (--data A --data B) "
            "to share the cache, or use another --output"
        )


def cache_digest(roots: Sequence[str | Path]) -> str:
    """What a cache holds, as one hash (each item's key and input fingerprint): a run resumed on a
    cache whose data was changed since its checkpoint is refused instead of going on silently."""
    h = hashlib.sha256()
    for root in roots:
        manifest = read_cache_manifest(root)
        for entry in sorted(manifest["items"], key=lambda e: e["key"]):
            h.update(f"{entry['key']}:{entry.get('fingerprint') or entry.get('caption')}\n".encode())
    return h.hexdigest()[:16]


def _stored_fingerprint(path: Path) -> str | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return (f.metadata() or {}).get("fingerprint")
    except Exception:  # an unreadable file is simply re-encoded
        return None


@dataclass
class CachedItem:
    key: str
    relation: str
    caption: str
    latents: torch.Tensor
    masks: torch.Tensor | None
    text: dict[str, torch.Tensor]
    #: the VAE posterior's std (caches written before it was stored: None)
    latents_std: torch.Tensor | None = None
    #: the image condition of image-to-video backbones that need more than the first latent frame
    image_condition: torch.Tensor | None = None
    #: the image encoder's tokens of the first frame (backbones whose transformer attends to them)
    image_embeds: torch.Tensor | None = None


class CachedDataset:
    """The exemplars of one or several cache folders, fully in memory (they are small)."""

    def __init__(self, roots: list[Path]) -> None:
        self.items: list[CachedItem] = []
        self.backbones: set[str] = set()
        self.null_text: dict[str, torch.Tensor] | None = None
        shapes = set()
        for root in map(Path, roots):
            manifest_path = root / MANIFEST
            if not manifest_path.is_file():
                raise InputError(
                    manifest_path, "no cache manifest", "run `dreamrelation cache` for this data first"
                )
            manifest = json.loads(manifest_path.read_text())
            self.backbones.add(manifest["backbone"])
            for entry in manifest["items"]:
                path = root / entry["file"]
                try:
                    tensors = load_file(str(path))
                except Exception as exc:
                    raise InputError(
                        path, f"cannot read cached item ({exc})", "re-run `dreamrelation cache`"
                    ) from exc
                text = {k.removeprefix("text."): v for k, v in tensors.items() if k.startswith("text.")}
                self.items.append(
                    CachedItem(
                        entry["key"],
                        entry["relation"],
                        entry["caption"],
                        tensors["latents"],
                        tensors.get("masks"),
                        text,
                        tensors.get("latents_std"),
                        tensors.get("image_condition"),
                        tensors.get("image_embeds"),
                    )
                )
                shapes.add(tuple(tensors["latents"].shape))
            if self.null_text is None:
                null = load_file(str(root / "null_prompt.safetensors"))
                self.null_text = {k.removeprefix("text."): v for k, v in null.items()}
        if not self.items:
            raise InputError(
                roots[0], "the cache holds no videos", "check the dataset folder and re-run caching"
            )
        if len(self.backbones) > 1:
            raise InputError(
                roots[0],
                f"caches from different backbones {sorted(self.backbones)}",
                "cache all data with the backbone you train",
            )
        if len(shapes) > 1:
            raise InputError(
                roots[0],
                f"cached latents have different shapes {sorted(shapes)}",
                "cache every source with the same num_frames/height/width",
            )

    def __len__(self) -> int:
        return len(self.items)

    @property
    def relations(self) -> list[str]:
        return sorted({i.relation for i in self.items})


def read_cache_manifest(root: str | Path) -> dict[str, Any]:
    """A cache folder's manifest, checked: readable JSON, its item files and null prompt present."""
    root = Path(root)
    path = root / "manifest.json"
    fix = "re-run `dreamrelation cache` for this data"
    if not path.is_file():
        raise InputError(path, "no cache manifest", fix)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        items = manifest["items"]
        files = [root / entry["file"] for entry in items]
        manifest["backbone"]
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(path, f"the cache manifest is damaged ({type(exc).__name__}: {exc})", fix) from None
    for file in [*files, root / "null_prompt.safetensors"]:
        if not file.is_file():
            raise InputError(file, "a cached file is missing", fix)
    return manifest


def check_cache_matches_model(caches: Sequence[Path], spec: ModelSpec) -> None:
    """Every cache was encoded by the model that will be trained (same backbone and weights)."""
    for root in caches:
        manifest = read_cache_manifest(root)
        if manifest["backbone"] != spec.backbone:
            raise ConfigError(
                f"{root}: the cache was made with backbone {manifest['backbone']}, training uses "
                f"{spec.backbone}; re-run `dreamrelation cache --backbone {spec.backbone}` or train with "
                f"--backbone {manifest['backbone']}"
            )
        cached_model = manifest.get("model")
        if cached_model is not None and not _same_model(cached_model, spec.model):
            raise ConfigError(
                f"{root}: the cache was made with --model {cached_model}, training uses --model "
                f"{spec.model}; latents and text embeddings differ between models: re-run "
                f"`dreamrelation cache --model {spec.model}` or train with --model {cached_model}"
            )


def _same_model(a: str, b: str) -> bool:
    if a == b:
        return True
    pa, pb = Path(a), Path(b)
    return pa.is_dir() and pb.is_dir() and pa.resolve() == pb.resolve()
