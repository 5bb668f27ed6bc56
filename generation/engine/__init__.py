"""Pictor's image-generation engine: plain Python on diffusers, no Django (see runner.generate).

It reads no environment and no settings: whoever runs it hands it an EngineConfig
(config.configure; the Django app does so in generation/apps.py).
"""
