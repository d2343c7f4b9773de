"""Deprecated: moved to :mod:`lensa_for_all.pipeline.settings` (see ``lensa_for_all.moved``)."""
from .moved import alias

alias(__name__)
