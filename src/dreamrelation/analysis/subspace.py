"""Q/K/V subspace similarity of a video transformer, read straight from its safetensors files.

The measure (paper §4, after the LoRA paper's Grassmann-style similarity): for two projection
weights W1, W2 of shape (out, in), take the top-r left singular vectors U1, U2 (they span the
output space the projection writes into) and report ‖U1[:, :r]ᵀ U2[:, :r]‖_F² / r, which lies in
[0, 1]: 1 when the two r-dimensional subspaces coincide, about r/out for unrelated random ones.

The model is never instantiated: tensor names and shapes come from the safetensors headers and
weights are read one at a time, so peak memory is a few projection matrices, not the checkpoint.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from dreamrelation.backbones import layouts
from dreamrelation.errors import ConfigError, InputError
from dreamrelation.files import write_text_atomic

PAIRS: tuple[tuple[str, str], ...] = (("q", "k"), ("q", "v"), ("k", "v"))
DEFAULT_RANKS: tuple[int, ...] = (4, 8, 16, 32)

# family -> stream -> (attention-module regex whose first group is the layer id, role -> projection):
# the backbones' own table, plain data, so the analysis builds no pipeline to read a few weight names.
LAYOUTS: dict[str, dict[str, tuple[str, dict[str, str]]]] = {
    family: layouts.layer_streams(family) for family in layouts.ATTENTION_LAYOUTS
}

# A tensor name that only this family has; checked in this order (Mochi before CogVideoX, whose
# names are a subset of Mochi's).
_SIGNATURES: tuple[tuple[str, str], ...] = (
    ("wan", r"blocks\.\d+\.attn2\.to_k\.weight"),
    ("hunyuan", r"(single_)?transformer_blocks\.\d+\.attn\.to_q\.weight"),
    ("mochi", r"transformer_blocks\.\d+\.attn1\.add_q_proj\.weight"),
    ("cogvideox", r"transformer_blocks\.\d+\.attn1\.to_q\.weight"),
)

CLASS_NAMES: dict[str, str] = layouts.TRANSFORMER_CLASSES

_WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
_INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"
_MAX_HEADER_BYTES = 100_000_000  # the safetensors format's own limit
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


# ----- the measure ---------------------------------------------------------------------------
def top_left_singular_vectors(
    weight: torch.Tensor, rank: int, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """The top ``rank`` left singular vectors (out, rank) of an (out, in) weight.

    Column signs are arbitrary (as for any SVD); the subspace they span is what matters.
    """
    if weight.ndim != 2:
        raise ValueError(f"expected a 2-D (out, in) weight, got shape {tuple(weight.shape)}")
    if not 1 <= rank <= min(weight.shape):
        raise ConfigError(
            f"rank {rank} is outside 1..{min(weight.shape)} for a weight of shape {tuple(weight.shape)}"
        )
    # An eigendecomposition of the smaller Gram matrix in float64 gives the same vectors as an
    # SVD, several times faster on CPU for 3072-wide projections; float64 keeps the small gaps
    # at the top of the squared spectrum resolved.
    matrix = weight.to(dtype)
    out_dim, in_dim = matrix.shape
    if out_dim <= in_dim:
        _, eigenvectors = torch.linalg.eigh(matrix @ matrix.T)  # W Wᵀ = U Σ² Uᵀ, ascending
        return eigenvectors[:, -rank:].flip(1).clone()
    # Tall weight: Wᵀ W = V Σ² Vᵀ, and W V = U Σ. QR orthonormalises W V column by column, so
    # its first r columns span the top-r left singular space for every r (also if some σ = 0).
    _, right = torch.linalg.eigh(matrix.T @ matrix)
    left, _ = torch.linalg.qr(matrix @ right[:, -rank:].flip(1))
    return left


def similarity_from_bases(u1: torch.Tensor, u2: torch.Tensor, ranks: Sequence[int]) -> dict[int, float]:
    """Subspace similarity at each rank from precomputed bases (out, >= max(ranks))."""
    if u1.shape[0] != u2.shape[0]:
        raise ValueError(f"the projections write into different spaces: {u1.shape[0]} vs {u2.shape[0]} rows")
    top = max(ranks)
    # One product serves every rank: its leading r x r block is U1[:, :r]^T U2[:, :r].
    overlap = u1[:, :top].T @ u2[:, :top]
    return {r: float(overlap[:r, :r].square().sum() / r) for r in ranks}


def subspace_similarity(w1: torch.Tensor, w2: torch.Tensor, rank: int) -> float:
    """‖U1[:, :r]ᵀ U2[:, :r]‖_F² / r for the left singular vectors of two (out, in) weights; in [0, 1]."""
    if w1.ndim != 2 or w2.ndim != 2 or w1.shape[0] != w2.shape[0]:
        raise ValueError(
            f"need two (out, in) weights with the same out; got {tuple(w1.shape)} and {tuple(w2.shape)}"
        )
    u1 = top_left_singular_vectors(w1, rank)
    u2 = top_left_singular_vectors(w2, rank)
    return similarity_from_bases(u1, u2, [rank])[rank]


# ----- which tensors are Q, K, V ----------------------------------------------------------------
def family_from_class_name(class_name: str | None) -> str | None:
    """Our family name for a diffusers ``_class_name`` (None when we do not know the class)."""
    return CLASS_NAMES.get(class_name or "")


def detect_family(
    tensor_names: Iterable[str], family: str | None = None, *, source: str = "<checkpoint>"
) -> str:
    """The backbone family of a checkpoint, from a hint (family or class name) or its tensor names."""
    if family is not None:
        resolved = family if family in LAYOUTS else family_from_class_name(family)
        if resolved is None:
            known = ", ".join([*LAYOUTS, *CLASS_NAMES])
            raise ConfigError(f"unknown model family {family!r}; known: {known}")
        return resolved
    names = list(tensor_names)
    for name, signature in _SIGNATURES:
        pattern = re.compile(signature)
        if any(pattern.fullmatch(n) for n in names):
            return name
    raise InputError(
        source,
        "no MM-DiT attention projections found; looked for " + ", ".join(s for _, s in _SIGNATURES),
        "pass a diffusers transformer of Mochi, Wan2.1, HunyuanVideo or CogVideoX (or set its family)",
    )


def _layer_sort_key(layer: str, stream_order: int) -> tuple[int, str, int]:
    prefix, _, index = layer.rpartition(".")
    return (stream_order, prefix, int(index))


def discover_projections(
    tensor_names: Iterable[str], family: str | None = None, *, source: str = "<checkpoint>"
) -> dict[str, dict[str, dict[str, str]]]:
    """Map layer id -> stream ("vision"/"text"/"joint") -> role ("q"/"k"/"v"/"out") -> tensor name.

    ``family`` is a hint (a family name or a diffusers ``_class_name``); without it the family is
    detected from the names. Every stream found must have all of Q, K and V.
    """
    names = list(tensor_names)
    family = detect_family(names, family, source=source)
    layout = LAYOUTS[family]
    found: dict[str, dict[str, dict[str, str]]] = {}
    order: dict[str, int] = {}
    for name in names:
        for stream, (block, roles) in layout.items():
            for role, projection in roles.items():
                match = re.fullmatch(rf"{block}\.{re.escape(projection)}\.weight", name)
                if match:
                    layer = match.group(1)
                    found.setdefault(layer, {}).setdefault(stream, {})[role] = name
                    # Hunyuan's dual-stream blocks come before its single-stream ones.
                    order.setdefault(layer, list(layout).index(stream))
    if not found:
        looked_for = "; ".join(
            f"{stream}: {block}.{{{','.join(roles.values())}}}.weight"
            for stream, (block, roles) in layout.items()
        )
        raise InputError(
            source,
            f"no attention projections of the {family} layout found (looked for {looked_for})",
            "check that the checkpoint is a diffusers transformer of that family, or pass the right family",
        )
    incomplete = [
        f"{layer} ({stream}: missing {', '.join(r for r in 'qkv' if r not in roles)})"
        for layer, streams in found.items()
        for stream, roles in streams.items()
        if not {"q", "k", "v"} <= roles.keys()
    ]
    if incomplete:
        raise InputError(
            source,
            f"incomplete attention layers: {'; '.join(incomplete[:5])}",
            "the checkpoint is truncated or not a full diffusers transformer; re-download it",
        )
    # Report in a stable order: layers by block index, streams as in the layout, roles q, k, v, out.
    return {
        layer: {
            stream: {role: found[layer][stream][role] for role in roles if role in found[layer][stream]}
            for stream, (_, roles) in layout.items()
            if stream in found[layer]
        }
        for layer in sorted(found, key=lambda layer: _layer_sort_key(layer, order[layer]))
    }


# ----- streaming checkpoint reader ----------------------------------------------------------
def _read_header(file: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (names, dtypes, shapes), without touching the data."""
    try:
        with file.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > _MAX_HEADER_BYTES:
                raise ValueError(f"header length {length} is implausible")
            header = json.loads(handle.read(length))
        header.pop("__metadata__", None)
        needed = 8 + length + max((int(v["data_offsets"][1]) for v in header.values()), default=0)
    except (OSError, struct.error, ValueError, TypeError, KeyError, IndexError, AttributeError) as error:
        raise InputError(
            file,
            f"not a readable safetensors file ({type(error).__name__}: {error})",
            "re-download or re-export it",
        ) from None
    size = file.stat().st_size
    if size < needed:  # the header survived but the data was cut off (an interrupted copy)
        raise InputError(
            file, f"is truncated: {size} bytes, its header needs {needed}", "re-download or re-export it"
        )
    return header


@dataclass
class CheckpointReader:
    """The tensors of a diffusers transformer checkpoint, one at a time.

    Names and shapes come from the shard headers; :meth:`get_tensor` opens the shard for each
    read, because a handle kept open would keep every page read so far resident (mmap).
    """

    source: str
    files: list[Path]
    config: dict[str, Any] = field(default_factory=dict)
    _where: dict[str, Path] = field(default_factory=dict, repr=False)
    _headers: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for file in self.files:
            header = _read_header(file)
            for name, info in header.items():
                self._where[name] = file
                self._headers[name] = info

    @property
    def class_name(self) -> str | None:
        return self.config.get("_class_name")

    @property
    def family_hint(self) -> str | None:
        """The family named by config.json, if it is one we know."""
        return family_from_class_name(self.class_name)

    @property
    def size_bytes(self) -> int:
        return sum(file.stat().st_size for file in self.files)

    def tensor_names(self) -> list[str]:
        return list(self._where)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._headers[self._key(name)]["shape"])

    def dtype(self, name: str) -> str:
        return str(self._headers[self._key(name)]["dtype"])

    def get_tensor(self, name: str) -> torch.Tensor:
        file = self._where[self._key(name)]
        with safe_open(str(file), framework="pt", device="cpu") as handle:
            return handle.get_tensor(name)

    def _key(self, name: str) -> str:
        if name not in self._where:
            raise KeyError(f"{name!r} is not in {self.source}")
        return name


def _load_config(folder: Path) -> dict[str, Any]:
    config_file = folder / "config.json"
    if not config_file.is_file():
        return {}
    try:
        return json.loads(config_file.read_text())
    except ValueError as error:
        raise InputError(config_file, f"not valid JSON ({error})", "re-download or fix the file") from None


def _index_files(index: Path) -> list[Path]:
    """The shard files a ``*.safetensors.index.json`` points to."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (ValueError, KeyError, TypeError) as error:
        raise InputError(index, f"not a safetensors index ({error})", "re-download the checkpoint") from None
    files = [index.parent / name for name in dict.fromkeys(weight_map.values())]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise InputError(
            index, f"lists missing shard files: {', '.join(missing)}", "re-download the checkpoint"
        )
    return files


def _model_files(folder: Path) -> list[Path] | None:
    """The weight files of a diffusers model folder, or None if it is not one."""
    if (folder / _INDEX_NAME).is_file():
        return _index_files(folder / _INDEX_NAME)
    if (folder / _WEIGHTS_NAME).is_file():
        return [folder / _WEIGHTS_NAME]
    # Variant files (e.g. diffusion_pytorch_model.fp16.safetensors) when there is exactly one.
    indexes = sorted(folder.glob("diffusion_pytorch_model*.safetensors.index.json"))
    singles = sorted(folder.glob("diffusion_pytorch_model*.safetensors"))
    if len(indexes) == 1:
        return _index_files(indexes[0])
    if len(singles) == 1 and not indexes:
        return singles
    if indexes or singles:
        raise InputError(
            folder,
            f"several weight variants: {', '.join(p.name for p in [*indexes, *singles])}",
            "pass the one .safetensors file to analyse",
        )
    return None


def _download(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(repo_id, allow_patterns=["transformer/*.json", "transformer/*.safetensors"])
        )
    except Exception as error:  # offline, unknown repo, gated repo: all end the same way for the user
        raise InputError(
            repo_id,
            "is no local path, and its transformer could not be fetched from the Hugging Face Hub "
            f"({type(error).__name__}: {error})",
            "pass a local diffusers folder (pipeline or transformer/), or download it once with network "
            "access so it is in the Hugging Face cache",
        ) from None


def open_checkpoint(path_or_hub_id: str | Path) -> CheckpointReader:
    """Open a pipeline folder, a transformer folder, a single .safetensors file or a hub id."""
    source = str(path_or_hub_id)
    path = Path(path_or_hub_id).expanduser()
    if not path.exists():
        if isinstance(path_or_hub_id, str) and _HUB_ID.fullmatch(source):
            path = _download(source)
        else:
            raise InputError(
                path, "does not exist", "pass an existing folder, .safetensors file or a hub id (org/name)"
            )
    if path.is_file():
        if path.suffix != ".safetensors":
            raise InputError(
                path, "is not a .safetensors file", "pass a .safetensors file or a diffusers folder"
            )
        return CheckpointReader(source, [path], _load_config(path.parent))
    for folder in (path / "transformer", path):
        files = _model_files(folder)
        if files is not None:
            return CheckpointReader(source, files, _load_config(folder))
    raise InputError(
        path,
        f"no transformer weights found (looked for {_INDEX_NAME} or {_WEIGHTS_NAME} "
        "in the folder and in its transformer/ subfolder)",
        "pass a diffusers pipeline folder, its transformer/ folder or a .safetensors file",
    )


# ----- LoRA deltas ---------------------------------------------------------------------------
class _LoraDeltas:
    """ΔW = lora_scale * alpha/r * B @ A per module of a diffusers-format LoRA file."""

    _PREFIXES = ("transformer.", "base_model.model.")

    def __init__(self, file: Path, scale: float) -> None:
        if not math.isfinite(scale) or abs(scale) > 100:
            raise ConfigError(f"--lora-scale: must be a finite number in [-100, 100], got {scale}")
        if not file.is_file():
            raise InputError(
                file, "does not exist", "pass the .safetensors LoRA file written by training/export"
            )
        self.file = file
        self.scale = scale
        self.names = set(_read_header(file))
        self.modules: dict[str, str] = {}  # module name -> key prefix in the file
        for name in self.names:
            if name.endswith(".lora_A.weight"):
                key = name[: -len(".lora_A.weight")]
                module = key
                for prefix in self._PREFIXES:
                    module = module.removeprefix(prefix)
                if f"{key}.lora_B.weight" not in self.names:
                    raise InputError(file, f"{key} has lora_A but no lora_B", "re-export the LoRA")
                self.modules[module] = key
        if not self.modules:
            raise InputError(
                file,
                "no '<module>.lora_A.weight' / '<module>.lora_B.weight' pairs found",
                "export the LoRA in diffusers format (keys 'transformer.<module>.lora_A.weight')",
            )
        self.applied: set[str] = set()

    def delta(self, weight_name: str, shape: tuple[int, ...]) -> torch.Tensor | None:
        module = weight_name.removesuffix(".weight")
        key = self.modules.get(module)
        if key is None:
            return None
        with safe_open(str(self.file), framework="pt", device="cpu") as handle:
            down = handle.get_tensor(f"{key}.lora_A.weight").float()
            up = handle.get_tensor(f"{key}.lora_B.weight").float()
            # Our exporter folds alpha/r into B and writes no alpha; other tools store it.
            alpha_key = next((k for k in (f"{key}.alpha", f"{module}.alpha") if k in self.names), None)
            alpha_scale = 1.0 if alpha_key is None else float(handle.get_tensor(alpha_key)) / down.shape[0]
        if not (torch.isfinite(down).all() and torch.isfinite(up).all()):
            raise InputError(
                self.file, f"{key} contains NaN or infinite values", "retrain, or use an intact file"
            )
        delta = (self.scale * alpha_scale) * (up @ down)
        if tuple(delta.shape) != tuple(shape):
            raise InputError(
                self.file,
                f"{module}: LoRA delta has shape {tuple(delta.shape)} but the weight is {tuple(shape)}",
                "use a LoRA trained on this model",
            )
        self.applied.add(module)
        return delta


# ----- the analysis --------------------------------------------------------------------------
def _pair_key(a: str, b: str) -> str:
    return f"{a}-{b}"


def _validate_ranks(ranks: Sequence[int]) -> list[int]:
    try:
        cleaned = sorted({int(r) for r in ranks})
    except (TypeError, ValueError):
        raise ConfigError(f"ranks must be positive integers, got {ranks!r}") from None
    if not cleaned or cleaned[0] < 1:
        raise ConfigError(f"ranks must be positive integers, got {list(ranks)!r}")
    return cleaned


def analyze_checkpoint(
    path: str | Path | CheckpointReader,
    ranks: Sequence[int] = DEFAULT_RANKS,
    lora: str | Path | None = None,
    lora_scale: float = 1.0,
    family: str | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> dict[str, Any]:
    """Q–K, Q–V and K–V subspace similarity per layer, stream and rank, plus per-stream averages.

    With ``lora`` the effective weights W + ΔW are analysed. Weights are read one at a time;
    only the small (out, max rank) bases of one layer's Q, K and V are held at once.
    ``progress(done, total, layer)`` is called after each layer. The result is JSON-serialisable.
    """
    reader = path if isinstance(path, CheckpointReader) else open_checkpoint(path)
    ranks = _validate_ranks(ranks)
    names = reader.tensor_names()
    family_name = detect_family(names, family or reader.family_hint, source=reader.source)
    layers = discover_projections(names, family_name, source=reader.source)
    lora_deltas = _LoraDeltas(Path(lora), lora_scale) if lora is not None else None

    # Validate every rank against every shape from the headers before any SVD starts.
    dims: dict[str, dict[str, list[int]]] = {}
    for streams in layers.values():
        for stream, roles in streams.items():
            for role, name in roles.items():
                dims.setdefault(stream, {}).setdefault(role, list(reader.shape(name)))
                if role != "out" and max(ranks) > min(reader.shape(name)):
                    raise ConfigError(
                        f"rank {max(ranks)} exceeds the smallest dimension of {name} {reader.shape(name)}; "
                        f"use ranks <= {min(reader.shape(name))}"
                    )

    per_layer: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for done, (layer, streams) in enumerate(layers.items(), start=1):
        per_layer[layer] = {}
        for stream, roles in streams.items():
            bases = {}
            for role in ("q", "k", "v"):
                weight = reader.get_tensor(roles[role]).to(torch.float64)
                if lora_deltas is not None:
                    delta = lora_deltas.delta(roles[role], tuple(weight.shape))
                    if delta is not None:
                        # Out of place: a weight stored in float64 is still the file's memory map here.
                        weight = weight + delta
                bases[role] = top_left_singular_vectors(weight, max(ranks))
                del weight  # free before reading the next projection
            per_layer[layer][stream] = {
                _pair_key(a, b): {
                    str(r): s for r, s in similarity_from_bases(bases[a], bases[b], ranks).items()
                }
                for a, b in PAIRS
            }
            del bases
        if progress is not None:
            progress(done, len(layers), layer)

    average: dict[str, dict[str, dict[str, float]]] = {}
    for stream in dims:
        rows = [streams[stream] for streams in per_layer.values() if stream in streams]
        average[stream] = {
            _pair_key(a, b): {
                str(r): sum(row[_pair_key(a, b)][str(r)] for row in rows) / len(rows) for r in ranks
            }
            for a, b in PAIRS
        }

    return {
        "model": reader.source,
        "files": [str(f) for f in reader.files],
        "class_name": reader.class_name,
        "family": family_name,
        "ranks": ranks,
        "pairs": [_pair_key(a, b) for a, b in PAIRS],
        "dims": dims,
        "num_layers": len(layers),
        "lora": None if lora is None else str(lora),
        "lora_scale": lora_scale if lora is not None else None,
        "lora_modules_applied": None if lora_deltas is None else len(lora_deltas.applied),
        "layers": per_layer,
        "average": average,
    }


# ----- report --------------------------------------------------------------------------------
_PAIR_LABELS = {"q-k": "Q–K", "q-v": "Q–V", "k-v": "K–V"}


def save_report(result: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Write ``subspace.json`` and one heatmap PNG per stream (layers × pairs at each rank)."""
    # A bare Figure on the Agg canvas: writes files without a display and without switching the
    # pyplot backend of a caller's session (e.g. a notebook).
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "subspace.json"]
    write_text_atomic(written[0], json.dumps(result, indent=2))

    pairs = result["pairs"]
    for stream in result["average"]:
        layers = [layer for layer, streams in result["layers"].items() if stream in streams]
        fig = Figure(
            figsize=(1.2 + 1.6 * len(result["ranks"]), 1.5 + 0.22 * len(layers)), layout="constrained"
        )
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, len(result["ranks"]), squeeze=False)
        image = None
        for ax, rank in zip(axes[0], result["ranks"], strict=True):
            grid = [[result["layers"][layer][stream][pair][str(rank)] for pair in pairs] for layer in layers]
            image = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
            ax.set_title(f"r = {rank}", fontsize=9)
            ax.set_xticks(range(len(pairs)), [_PAIR_LABELS.get(p, p) for p in pairs], fontsize=8)
            ax.set_yticks(range(len(layers)))
            ax.set_yticklabels(
                [layer.rpartition(".")[2] for layer in layers] if ax is axes[0][0] else [], fontsize=6
            )
        axes[0][0].set_ylabel("layer")
        fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="subspace similarity")
        weights = "base weights" if result.get("lora") is None else f"base + LoRA {Path(result['lora']).name}"
        fig.suptitle(f"{result['family']} {stream} stream: {weights}", fontsize=10)
        png = out / f"subspace_{stream}.png"
        fig.savefig(png, dpi=120)
        written.append(png)
    return written
