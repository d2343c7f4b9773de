"""Deprecated: moved to :mod:`lensa_for_all.generation.endpoint_handler` (see ``lensa_for_all.moved``)."""
from ..moved import alias

alias(__name__)
