"""The DreamBooth training loop and what surrounds it (data, checkpoints, artifacts, the entry point).

Modules here import torch and diffusers at import time *inside functions* only where the entry point
must stay light; import them directly (``lensa_for_all.training.loop``), not through this package.
"""
