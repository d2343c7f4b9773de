"""A full fine-tune is saved in the layout the Hub's SD checkpoints have, so other loaders read every weight.

transformers 5's ``save_pretrained`` drops the CLIP ``text_model.`` key prefix and writes the tokenizer as
``tokenizer.json`` only; transformers 4.x / 5.5 then load a *random* text encoder (a warning only). The
cross-version proof runs in tests/test_container_parity.py; here: the layout itself, the trained weights
really in the files, and the base's inference scheduler kept.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training_helpers import make_subject_photos, tiny_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_subject_photos(tmp_path_factory.mktemp("photos") / "subject")


def test_tiny_model_has_the_hub_sd15_layout(tiny_sd: Path) -> None:
    from safetensors import safe_open

    assert sorted(p.name for p in (tiny_sd / "tokenizer").iterdir()) == [
        "merges.txt", "special_tokens_map.json", "tokenizer_config.json", "vocab.json"]
    with safe_open(str(tiny_sd / "text_encoder" / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and all(k.startswith("text_model.") for k in keys)


@pytest.mark.parametrize("train_text_encoder", [True, False])
def test_full_fine_tune_layout_loads_every_weight(tiny_sd: Path, photos: Path, tmp_path: Path,
                                                  train_text_encoder: bool) -> None:
    import torch
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file
    from transformers import CLIPTextModel, CLIPTokenizer

    from lensa_for_all.training.loop import train

    cfg = tiny_config(tiny_sd, "full", with_prior_preservation=False, train_text_encoder=train_text_encoder,
                      max_train_steps=3, learning_rate=1e-3)
    out = tmp_path / "out"
    train(cfg, photos, out, checkpoint_dir=tmp_path / "ck")

    te = load_file(str(out / "text_encoder" / "model.safetensors"))
    assert te and all(k.startswith("text_model.") for k in te)
    base_te = load_file(str(tiny_sd / "text_encoder" / "model.safetensors"))
    assert te.keys() == base_te.keys()
    changed = [k for k in te if not torch.equal(te[k], base_te[k])]
    assert bool(changed) == train_text_encoder  # the trained encoder is what was written, the frozen one is the base's

    names = sorted(p.name for p in (out / "tokenizer").iterdir())
    assert "vocab.json" in names and "merges.txt" in names and "tokenizer.json" not in names
    assert (out / "scheduler" / "scheduler_config.json").read_text() == \
        (tiny_sd / "scheduler" / "scheduler_config.json").read_text()
    index = json.loads((out / "model_index.json").read_text())
    assert index["scheduler"] == ["diffusers", "PNDMScheduler"] and index["safety_checker"] == [None, None]

    model, info = CLIPTextModel.from_pretrained(out / "text_encoder", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    for key, value in model.state_dict().items():
        canonical = key if key.startswith("text_model.") else "text_model." + key
        if canonical in te:
            assert torch.equal(value, te[canonical]), key
    tokenizer = CLIPTokenizer.from_pretrained(out / "tokenizer")
    base_tokenizer = CLIPTokenizer.from_pretrained(tiny_sd / "tokenizer")
    assert tokenizer("a photo of ohwx dog").input_ids == base_tokenizer("a photo of ohwx dog").input_ids

    pipe = StableDiffusionPipeline.from_pretrained(out, safety_checker=None)
    assert type(pipe.scheduler).__name__ == "PNDMScheduler"
    image = pipe("a photo of ohwx dog", num_inference_steps=2, output_type="np",
                 generator=torch.Generator().manual_seed(0)).images[0]
    assert image.shape == (64, 64, 3)
