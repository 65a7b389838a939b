"""CLIP-T and temporal consistency from a transformers CLIP checkpoint (hub id or folder).

Default ``openai/clip-vit-base-patch32``: the transformers port of OpenAI's ViT-B/32, which the
authors' group's public metric script (VGen ``cal_metric_DreamVideo.py``, written for DreamVideo)
loads, with every frame of the video, the same raw-cosine CLIP-T (mean over frames of text·frame
on L2-normalised embeddings) and the same consecutive-frame temporal consistency. Other CLIPs
(e.g. ViT-L/14) give systematically different cosines, so only ViT-B/32 numbers sit beside the
paper's Table 1.
"""

from __future__ import annotations

import numpy as np

from dreamrelation.evaluation.metrics import clip_t, temporal_consistency

DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch32"


def _embeddings(output: object):  # noqa: ANN202 - a tensor, or a model output holding it
    # transformers < 5 returns the projected embeddings; 5.x wraps them as pooler_output
    return output if hasattr(output, "shape") else output.pooler_output


class ClipScorer:
    """Embeds frames and prompts with one CLIP; ``score`` gives both CLIP metrics of one video."""

    def __init__(
        self, model: str = DEFAULT_CLIP_MODEL, device: str | None = None, batch_size: int = 32
    ) -> None:
        from transformers import CLIPModel, CLIPProcessor

        from dreamrelation.devices import resolve_device
        from dreamrelation.pretrained import load_pretrained, require_all_weights

        self.device = resolve_device(device or "auto")
        self.processor = load_pretrained(
            "CLIP processor", model, CLIPProcessor.from_pretrained, DEFAULT_CLIP_MODEL
        )
        clip, info = load_pretrained(
            "CLIP model",
            model,
            lambda s: CLIPModel.from_pretrained(s, output_loading_info=True),
            DEFAULT_CLIP_MODEL,
        )
        require_all_weights("CLIP model", model, info, DEFAULT_CLIP_MODEL)
        self.model = clip.to(self.device).eval()
        self.name = model
        self.batch_size = batch_size

    def image_embeddings(self, frames: np.ndarray) -> np.ndarray:
        """(F, H, W, 3) uint8 frames -> (F, D) image embeddings (not normalised)."""
        import torch

        chunks = []
        with torch.no_grad():
            for start in range(0, len(frames), self.batch_size):
                batch = list(frames[start : start + self.batch_size])
                inputs = self.processor(images=batch, return_tensors="pt").to(self.device)
                chunks.append(_embeddings(self.model.get_image_features(**inputs)).float().cpu().numpy())
        return np.concatenate(chunks)

    def text_embedding(self, text: str) -> np.ndarray:
        """One prompt -> (D,) text embedding (CLIP's 77-token limit: longer prompts are truncated)."""
        import torch

        inputs = self.processor(text=[text], return_tensors="pt", padding=True, truncation=True).to(
            self.device
        )
        with torch.no_grad():
            return _embeddings(self.model.get_text_features(**inputs)).float().cpu().numpy()[0]

    def score(self, frames: np.ndarray, prompt: str) -> dict[str, float]:
        images = self.image_embeddings(frames)
        result = {"clip_t": clip_t(images, self.text_embedding(prompt))}
        if len(images) >= 2:
            result["temporal_consistency"] = temporal_consistency(images)
        return result
