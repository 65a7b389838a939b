"""toyworld.presets."""
