"""Helpers shared by the tests, benchmarks and examples (no pytest import), as diffusers keeps its
``testing_utils``: everything built in-process from tiny random configs, nothing downloaded.

* :mod:`dreamrelation.testing.data`: datasets in the project's format and a cache of them encoded
  by a tiny backbone (:func:`write_two_subject_dataset`, :func:`write_tiny_cache`), and a
  training config on a tiny model and the losses of its run (:func:`tiny_train_config`,
  :func:`tiny_train_losses`);
* :mod:`dreamrelation.backbones.tiny_text`: the word-level tokenizer and tiny T5 config of the tiny
  backbones (``model: tiny``) and of the toy world;
* :mod:`dreamrelation.testing.evaluation`: tiny random CLIP, VideoMAE, VLM judge and I3D folders;
* :mod:`dreamrelation.testing.segmenters`: tiny random Grounding DINO and SAM folders;
* :mod:`dreamrelation.testing.runner_stages`: the runner's stages, counting their calls.
"""

from dreamrelation.testing.data import (
    cached_first_frame,
    tiny_train_config,
    tiny_train_losses,
    write_tiny_cache,
    write_two_subject_dataset,
)

__all__ = [
    "cached_first_frame",
    "tiny_train_config",
    "tiny_train_losses",
    "write_tiny_cache",
    "write_two_subject_dataset",
]
