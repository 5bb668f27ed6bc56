"""Pictor's image-generation engine: plain Python on diffusers, no Django (see runner.generate)."""
