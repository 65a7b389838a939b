"""DreamRelation: relation-centric video customization on diffusers video transformers."""

__version__ = "0.1.0"
