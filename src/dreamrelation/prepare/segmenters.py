"""Open-vocabulary detection and box-prompted segmentation behind two one-method interfaces.

The mask writer only needs ``Detector.detect(image, phrases)`` (boxes labelled with the subject word
they matched) and ``Segmenter.segment(image, boxes)`` (one mask per box); the identity rules live in
:mod:`dreamrelation.prepare.tracking`. The shipped implementations are the paper's: Grounding DINO
(:class:`GroundingDinoDetector`, default ``IDEA-Research/grounding-dino-tiny``) and SAM
(:class:`SamSegmenter`, default ``facebook/sam-vit-base``), loaded with transformers'
``from_pretrained`` from a hub id or a local folder, on CPU or GPU.

torchvision is not needed: transformers (5.x) picks its PIL image processors when torchvision is
absent, and its torchvision ("fast") processors when it is installed; both give the same inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from dreamrelation.errors import InputError
from dreamrelation.prepare.tracking import Box, Detection
from dreamrelation.pretrained import load_pretrained, require_all_weights, resolve_source

DEFAULT_DETECTOR = "IDEA-Research/grounding-dino-tiny"
DEFAULT_SEGMENTER = "facebook/sam-vit-base"


class Detector(Protocol):
    def detect(self, image: Image.Image, phrases: Sequence[str]) -> list[Detection]:
        """Candidate boxes in pixels, each labelled with the index of the phrase it matched."""
        ...


class Segmenter(Protocol):
    def segment(self, image: Image.Image, boxes: Sequence[Box]) -> np.ndarray:
        """(N, H, W) bool: one mask per box, at the image's own size."""
        ...


def _default(kind: str) -> str:
    return DEFAULT_DETECTOR if kind.startswith("detector") else DEFAULT_SEGMENTER


def _load_model(kind: str, source: str, model_class, model_type: str):  # noqa: ANN001, ANN202
    """The model, refusing a checkpoint of another architecture or with missing weights (transformers
    would otherwise fill them with random values and only warn)."""
    from transformers import AutoConfig

    config = load_pretrained(kind, source, AutoConfig.from_pretrained, _default(kind))
    if config.model_type != model_type:
        raise InputError(
            resolve_source(kind, source)[1] or Path(source),
            f"is a {config.model_type!r} checkpoint, but the {kind} must be {model_type!r}",
            f"pass a {model_type} checkpoint (default {_default(kind)})",
        )
    model, info = load_pretrained(
        kind, source, lambda s: model_class.from_pretrained(s, output_loading_info=True), _default(kind)
    )
    require_all_weights(kind, source, info, _default(kind))
    return model


def phrase_spans(tokenizer, phrases: Sequence[str], input_ids: Sequence[int]) -> list[list[int]]:  # noqa: ANN001
    """Token positions of each phrase in Grounding DINO's prompt ``"[CLS] p1 . p2 . [SEP]"``.

    Checked against the prompt's own ids, so a tokenizer that merges across the separators is an
    error rather than a silently shifted phrase.
    """
    spans, position = [], 1  # after [CLS]
    for phrase in phrases:
        ids = tokenizer(phrase, add_special_tokens=False)["input_ids"]
        span = list(range(position, position + len(ids)))
        if not ids or [int(input_ids[i]) for i in span if i < len(input_ids)] != list(ids):
            raise ValueError(
                f"could not locate the phrase {phrase!r} in the detector's prompt tokens; "
                "use plain words such as 'person' or 'dog'"
            )
        spans.append(span)
        position += len(ids) + 1  # the phrase, then its "."
    return spans


class GroundingDinoDetector:
    """Grounding DINO boxes for each subject phrase (transformers ``GroundingDinoForObjectDetection``).

    A box's phrase is the one whose tokens it scores highest (the max sigmoid logit over the phrase's
    tokens); its score is that value. Boxes under ``box_threshold`` are dropped; at most ``top_k``
    are kept, best first.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        processor,  # noqa: ANN001 - a GroundingDinoProcessor
        device: str | torch.device = "cpu",
        box_threshold: float = 0.3,
        top_k: int = 6,
    ) -> None:
        self.model = model.to(device).eval()
        self.processor = processor
        self.device = torch.device(device)
        self.box_threshold = box_threshold
        self.top_k = top_k

    @classmethod
    def from_pretrained(
        cls, source: str = DEFAULT_DETECTOR, device: str | torch.device = "cpu", **kwargs: float
    ) -> GroundingDinoDetector:
        from transformers import AutoProcessor, GroundingDinoForObjectDetection

        model = _load_model("detector", source, GroundingDinoForObjectDetection, "grounding-dino")
        processor = load_pretrained(
            "detector processor", source, AutoProcessor.from_pretrained, DEFAULT_DETECTOR
        )
        return cls(model, processor, device, **kwargs)

    @torch.no_grad()
    def detect(self, image: Image.Image, phrases: Sequence[str]) -> list[Detection]:
        phrases = [" ".join(p.lower().replace(".", " ").split()) for p in phrases]
        if not phrases or not all(phrases):
            raise ValueError(f"need at least one non-empty subject phrase, got {list(phrases)}")
        text = ". ".join(phrases) + "."
        inputs = self.processor(images=image, text=text, return_tensors="pt").to(self.device)
        outputs = self.model(**inputs)
        spans = phrase_spans(self.processor.tokenizer, phrases, inputs["input_ids"][0].tolist())
        probabilities = outputs.logits[0].float().sigmoid()  # (queries, text positions)
        per_phrase = torch.stack([probabilities[:, span].amax(dim=1) for span in spans], dim=1)
        scores, labels = per_phrase.max(dim=1)
        cx, cy, w, h = outputs.pred_boxes[0].float().unbind(-1)  # normalised centre format
        width, height = image.size
        boxes = torch.stack(
            [
                ((cx - w / 2) * width).clamp(0, width),
                ((cy - h / 2) * height).clamp(0, height),
                ((cx + w / 2) * width).clamp(0, width),
                ((cy + h / 2) * height).clamp(0, height),
            ],
            dim=1,
        )
        order = torch.argsort(scores, descending=True)
        detections = []
        for index in order.tolist():
            if float(scores[index]) < self.box_threshold or len(detections) >= self.top_k:
                break
            box = tuple(float(v) for v in boxes[index].cpu())
            if box[2] - box[0] < 1 or box[3] - box[1] < 1:
                continue  # a degenerate box cannot prompt SAM
            detections.append(Detection(box, float(scores[index]), int(labels[index])))  # type: ignore[arg-type]
        return detections


class SamSegmenter:
    """SAM masks from box prompts (transformers ``SamModel``); the image is embedded once per call."""

    def __init__(
        self,
        model: torch.nn.Module,
        processor,  # noqa: ANN001 - a SamProcessor
        device: str | torch.device = "cpu",
    ) -> None:
        self.model = model.to(device).eval()
        self.processor = processor
        self.device = torch.device(device)

    @classmethod
    def from_pretrained(
        cls, source: str = DEFAULT_SEGMENTER, device: str | torch.device = "cpu"
    ) -> SamSegmenter:
        from transformers import AutoProcessor, SamModel

        model = _load_model("segmenter", source, SamModel, "sam")
        processor = load_pretrained(
            "segmenter processor", source, AutoProcessor.from_pretrained, DEFAULT_SEGMENTER
        )
        return cls(model, processor, device)

    @torch.no_grad()
    def segment(self, image: Image.Image, boxes: Sequence[Box]) -> np.ndarray:
        width, height = image.size
        if not boxes:
            return np.zeros((0, height, width), dtype=bool)
        inputs = self.processor(
            images=image, input_boxes=[[[float(v) for v in box] for box in boxes]], return_tensors="pt"
        )
        outputs = self.model(
            pixel_values=inputs["pixel_values"].to(self.device),
            input_boxes=inputs["input_boxes"].to(self.device),
            multimask_output=False,
        )
        masks = self.processor.post_process_masks(
            outputs.pred_masks.float().cpu(), inputs["original_sizes"], inputs["reshaped_input_sizes"]
        )[0]  # (boxes, 1, H, W) bool
        return masks[:, 0].numpy().astype(bool)
