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


def test_library_bars_off_hides_model_loading_bars_and_restores_them(tiny_sd: Path,
                                                                     capfd: pytest.CaptureFixture[str]) -> None:
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    from lensa_for_all.generation import AvatarModel
    from lensa_for_all.quiet import library_bars_off

    # an earlier in-process CLI test may have turned the bars off for good (route_library_output): start from
    # the libraries' defaults, and leave the switches as they were found
    before = (diffusers_logging.is_progress_bar_enabled(), transformers_logging.is_progress_bar_enabled(),
              are_progress_bars_disabled())
    diffusers_logging.enable_progress_bar()
    transformers_logging.enable_progress_bar()
    enable_progress_bars()
    try:
        AvatarModel.load(str(tiny_sd))
        assert "Loading pipeline components" in capfd.readouterr().err  # diffusers' default: the bar shows
        with library_bars_off():
            AvatarModel.load(str(tiny_sd))
        assert "Loading pipeline components" not in capfd.readouterr().err
        assert diffusers_logging.is_progress_bar_enabled() and transformers_logging.is_progress_bar_enabled()
        assert not are_progress_bars_disabled()  # switched back on after the block
    finally:
        for module, enabled in ((diffusers_logging, before[0]), (transformers_logging, before[1])):
            (module.enable_progress_bar if enabled else module.disable_progress_bar)()
        (disable_progress_bars if before[2] else enable_progress_bars)()
