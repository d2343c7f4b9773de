"""Quiet by default: library messages go to the log file; the ones that matter come back in our words."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest

from lensa_for_all.quiet import configure_console, library_output_to_file


@pytest.fixture
def console() -> object:
    from lensa_for_all import quiet

    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    logging.captureWarnings(False)  # an earlier main() in this process left it on, over pytest's own hook
    quiet._translator.said.clear()  # each translated message is said once per process
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)


def test_library_noise_goes_to_the_log_file_and_our_lines_stay(console: object, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    configure_console()
    log = tmp_path / "run" / "lensa.log"
    with library_output_to_file(log):
        logging.getLogger("diffusers.loaders.lora_base").warning(
            "No LoRA keys associated to CLIPTextModel found with the prefix='text_encoder'. This is safe to ignore")
        logging.getLogger("transformers.utils.import_utils").warning("`CLIPImageProcessor` requires torchvision")
        logging.getLogger("lensa_for_all.training.local").info("started the training process")
        logging.getLogger("lensa_for_all.pipeline").warning("the photos changed")
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn_explicit("copy=False failed", DeprecationWarning, "/site-packages/diffusers/x.py", 3)
            warnings.warn_explicit("no safety checker", UserWarning, "/src/lensa_for_all/generation/model.py", 9)
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "warning: Note: this LoRA adapts the UNet only, not the text encoder (expected when the text encoder was "
        "not trained; otherwise the LoRA does not fit this base model's text encoder).",
        "warning: the photos changed",
        "warning: no safety checker",
    ]
    text = log.read_text()
    for line in ("No LoRA keys associated", "requires torchvision", "started the training process",
                 "copy=False failed"):
        assert line in text


def test_verbose_shows_everything(console: object, capsys: pytest.CaptureFixture[str]) -> None:
    configure_console(verbose=True)
    with library_output_to_file(None, verbose=True):
        logging.getLogger("transformers.utils.import_utils").warning("requires torchvision")
        logging.getLogger("lensa_for_all.training.local").debug("argv")
    err = capsys.readouterr().err
    assert "WARNING transformers.utils.import_utils: requires torchvision" in err
    assert "DEBUG lensa_for_all.training.local: argv" in err
