"""Video backbones behind one interface (:class:`Backbone`); :mod:`.registry` maps names to classes.

Loaded on first use, so reading the plain-data layout table (:mod:`.layouts`) or a config that names
projection roles imports neither torch nor diffusers.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from dreamrelation.backbones.layouts import ROLES

if TYPE_CHECKING:
    from dreamrelation.backbones.base import Backbone, TransformerOnly
    from dreamrelation.backbones.registry import (
        _LAZY,  # noqa: F401 - the toy backbone's lazy registration, read by tests
        BACKBONES,
        DTYPES,
        backbone_class,
        load_backbone,
        register_backbone,
    )
    from dreamrelation.devices import default_device

_FROM = {
    "Backbone": "dreamrelation.backbones.base",
    "TransformerOnly": "dreamrelation.backbones.base",
    **dict.fromkeys(
        (
            "BACKBONES",
            "DTYPES",
            "_LAZY",
            "backbone_class",
            "load_backbone",
            "register_backbone",
        ),
        "dreamrelation.backbones.registry",
    ),
    "default_device": "dreamrelation.devices",
}


def __getattr__(name: str) -> Any:
    if name in _FROM:
        return getattr(import_module(_FROM[name]), name)
    raise AttributeError(f"module 'dreamrelation.backbones' has no attribute {name!r}")


__all__ = [
    "BACKBONES",
    "DTYPES",
    "ROLES",
    "Backbone",
    "TransformerOnly",
    "backbone_class",
    "default_device",
    "load_backbone",
    "register_backbone",
]
