"""Settings of the three data-preparation commands (pydantic, loadable from YAML like the others).

``Field(description=...)`` is the help text; `dreamrelation prepare ... --help` shows the named flags,
and ``--set key=value`` reaches every field listed here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dreamrelation.prepare.segmenters import DEFAULT_DETECTOR, DEFAULT_SEGMENTER


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class NtuConfig(_Strict):
    """`dreamrelation prepare ntu`: pick clips of the 26 two-person relations from a copy of NTU RGB+D."""

    ntu: Path = Field(
        description="Folder holding the *_rgb.avi files (one folder or the per-archive folders)."
    )
    output: Path = Field(description="Where to write one dataset folder per relation.")
    relations: str = Field("all", description="'all' or names/codes/ids, e.g. shaking_hands,A055,112.")
    clips_per_relation: int = Field(20, gt=0, description="Clips per relation (paper: about 20).")
    seed: int = Field(0, description="Seed of the deterministic selection.")
    min_frames: int = Field(61, gt=0, description="Clips with fewer decodable frames are skipped (named).")
    link: bool = Field(False, description="Hard-link the clips instead of copying them (same disk only).")


class VideosConfig(_Strict):
    """`dreamrelation prepare videos`: turn any clips into what a backbone needs, masks kept aligned."""

    input: Path = Field(description="Dataset folder: clips, <clip>.txt captions, optional masks/<clip>/.")
    output: Path = Field(description="Dataset folder to write (with bucketing: one sub-folder per size).")
    backbone: str = Field(
        "mochi", description="Whose frame rule and size rule to follow: mochi, wan, hunyuan, toy."
    )
    num_frames: int = Field(
        61, gt=0, description="Frames per output clip (Mochi 6k+1, Wan/HunyuanVideo 4k+1)."
    )
    fps: float | None = Field(None, gt=0, description="Resample to this frame rate first (default: keep).")
    frames: Literal["first", "uniform", "chunks"] = Field(
        "first", description="first N frames, N spread uniformly over the clip, or sliding chunks of N."
    )
    chunk_stride: int | None = Field(
        None, gt=0, description="Chunks: frames between chunk starts (default N)."
    )
    height: int = Field(480, gt=0, description="Output height (resize + centre crop).")
    width: int = Field(848, gt=0, description="Output width (resize + centre crop).")
    resize: Literal["crop", "bucket"] = Field(
        "crop", description="crop: every clip to height x width; bucket: to the nearest aspect-ratio bucket."
    )
    buckets: list[tuple[int, int]] = Field(
        default_factory=lambda: [(480, 848), (848, 480), (640, 640)],
        description="(height, width) sizes for resize=bucket.",
    )
    caption: str | None = Field(None, description="Caption for clips without a <clip>.txt (default: error).")
    crf: int = Field(18, ge=0, le=51, description="H.264 quality of the written clips (0 = lossless).")

    @model_validator(mode="after")
    def _chunks_only(self) -> VideosConfig:
        if self.chunk_stride is not None and self.frames != "chunks":
            raise ValueError("chunk_stride is only used with frames=chunks")
        return self


class MasksConfig(_Strict):
    """`dreamrelation masks`: subject masks with Grounding DINO + SAM, identities tracked through a clip."""

    data: list[Path] = Field(description="Dataset folder(s) to write masks/<clip>/00000.png ... into.")
    subjects: tuple[str, str] | None = Field(
        None, description="The two subject words, e.g. ['dog', 'cat'] (default: read from each caption)."
    )
    detector: str = Field(DEFAULT_DETECTOR, description="Grounding DINO: hub id or local folder.")
    segmenter: str = Field(DEFAULT_SEGMENTER, description="SAM: hub id or local folder.")
    device: str = Field("auto", description="auto (cuda if available), cpu, cuda, cuda:1 ...")
    box_threshold: float = Field(0.3, ge=0, le=1, description="Minimum Grounding DINO phrase score of a box.")
    top_k: int = Field(6, gt=0, description="Boxes per frame handed to SAM and the tracker.")
    min_overlap: float = Field(
        0.1, ge=0, le=1, description="IoU with the previous frame needed to keep an identity."
    )
    swap_ratio: float = Field(
        0.8, gt=0, le=1, description="Flag a frame as a suspected swap above this ratio."
    )
    max_missing_fraction: float = Field(
        0.2, ge=0, le=1, description="Fail a clip whose subject is missing in more of its frames than this."
    )
    preview: bool = Field(True, description="Write previews/<clip>.gif (masks over the frames).")
    overwrite: bool = Field(False, description="Redo clips that already have masks (default: skip them).")
