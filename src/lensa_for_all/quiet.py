"""Keep the terminal for our own lines: other libraries' logs, warnings and bars go to the run's log file.

diffusers, transformers, huggingface_hub, accelerate, peft and torch each print their own warnings and
progress bars; under the pipeline's progress display they are noise a user cannot act on. The command
line routes them into a log file (``RUN_DIR/lensa.log``) and shows them only with ``--verbose``. The few
that matter to a user are re-said in our words (:data:`TRANSLATIONS`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["LOG_FILE", "TRANSLATIONS", "configure_console", "library_bars_off", "library_output_to_file",
           "route_library_output"]

# the libraries whose own logging (and progress bars) we route or switch off
_HF_LOGGING_MODULES = ("diffusers.utils.logging", "transformers.utils.logging")

LOG_FILE = "lensa.log"
"""Name of the log file the command line writes into the run folder."""

TRANSLATIONS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"No LoRA keys associated to CLIPTextModel"),
     "Note: this LoRA adapts the UNet only, not the text encoder (expected when the text encoder was not "
     "trained; otherwise the LoRA does not fit this base model's text encoder)."),
)
"""Third-party messages a user must see, as (pattern, our sentence)."""

_ours = logging.getLogger("lensa_for_all")
# how logging.captureWarnings writes a warning raised in this package: "/.../lensa_for_all/x.py:12: UserWarning: ..."
_OUR_WARNING = re.compile(r"^.*[/\\]lensa_for_all[/\\][^:]*:\d+: \w+: (.*)$", re.MULTILINE)


class _ConsoleFormatter(logging.Formatter):
    """``warning: ...`` for our warnings; the logger name and level only in verbose mode."""

    def __init__(self, verbose: bool) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s" if verbose else "%(message)s")
        self.verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if not self.verbose and record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {text}"
        return text


class _Console(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (a test's capture, a redirected stream)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


class _OursOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.name == "lensa_for_all" or record.name.startswith("lensa_for_all.")


class _Translate(logging.Filter):
    """Say the few third-party messages that matter again, once each, in our words."""

    def __init__(self) -> None:
        super().__init__()
        self.said: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("lensa_for_all"):
            return True
        message = record.getMessage()
        ours = _OUR_WARNING.match(message) if record.name == "py.warnings" else None
        if ours:  # a warnings.warn of this library: ours to show, in our format
            _ours.warning(ours.group(1))
            return True
        for pattern, sentence in TRANSLATIONS:
            if pattern.search(message) and sentence not in self.said:
                self.said.add(sentence)
                _ours.warning(sentence)
        return True


def configure_console(*, verbose: bool = False, quiet: bool = False) -> None:
    """The root logger's terminal handler: everything with ``verbose``; else our own warnings only.

    Our INFO lines (what a backend is doing) go to the log file; the progress display says what matters.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_lensa_console", False):
            root.removeHandler(handler)
    console = _Console()
    console._lensa_console = True  # type: ignore[attr-defined]
    console.setFormatter(_ConsoleFormatter(verbose))
    if verbose:
        console.setLevel(logging.DEBUG)
    else:
        console.setLevel(logging.ERROR if quiet else logging.WARNING)
        console.addFilter(_translator)  # before _OursOnly: it sees the library records the console then drops
        console.addFilter(_OursOnly())
    root.addHandler(console)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not verbose:
        logging.captureWarnings(True)  # warnings.warn -> the "py.warnings" logger -> the log file only


_translator = _Translate()


def route_library_output(*, verbose: bool = False) -> None:
    """Send diffusers'/transformers' own handlers through the root logger, and turn off their bars.

    Call it before a command loads models, so even the first load prints nothing of theirs.
    """
    for module in _HF_LOGGING_MODULES:
        try:
            hf_logging = __import__(module, fromlist=["_"])
        except ImportError:  # pragma: no cover - both are core dependencies
            continue
        if verbose:
            continue
        hf_logging.disable_default_handler()
        hf_logging.enable_propagation()
        hf_logging.set_verbosity(logging.INFO)
        hf_logging.disable_progress_bar()
    if not verbose:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


@contextlib.contextmanager
def library_output_to_file(log_file: str | os.PathLike[str] | None, *, verbose: bool = False) -> Iterator[None]:
    """While inside, third-party logs and warnings go to ``log_file`` (created; appended to) and bars are off.

    With ``verbose`` nothing is hidden: the libraries print as they normally do, and the file gets a copy.
    """
    route_library_output(verbose=verbose)
    handler: logging.Handler | None = None
    if log_file is not None:
        path = Path(log_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setLevel(logging.DEBUG)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(handler)
    try:
        yield
    finally:
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()


@contextlib.contextmanager
def library_bars_off() -> Iterator[None]:
    """diffusers', transformers' and the Hub's own progress bars off for a block, then as they were.

    For library callers that draw their own progress (``Pipeline``) or none (``progress=False``): a model load
    would otherwise print "Loading pipeline components" and "Loading weights" bars into their output.
    """
    import importlib

    restore = []
    for module in _HF_LOGGING_MODULES:
        hf_logging = importlib.import_module(module)
        if hf_logging.is_progress_bar_enabled():
            hf_logging.disable_progress_bar()
            restore.append(hf_logging.enable_progress_bar)
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    if not are_progress_bars_disabled():
        disable_progress_bars()
        restore.append(enable_progress_bars)
    try:
        yield
    finally:
        for enable in restore:
            enable()
