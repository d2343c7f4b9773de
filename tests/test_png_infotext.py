"""Our PNGs read back through an independent implementation of AUTOMATIC1111's infotext rules.

The parser below is written from A1111's documented format, not from our writer: the last line holds
``Key: value`` pairs (at least three, else it is prompt text); a value is a JSON-quoted string or runs
to the next comma; ``WxH`` values split into ``Key-1`` / ``Key-2``; lines before it are the prompt
until one starting ``Negative prompt:``. Hashes are recomputed here from A1111's rules: checkpoint =
sha256(file)[:10]; LoRA = sha256(tensor data after the safetensors header)[:12].
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from export_helpers import make_lora_export
from lensa_for_all.generation import Avatar, AvatarModel


def _pairs(line: str) -> dict[str, str]:
    out: dict[str, str] = {}
    i, n = 0, len(line)
    while i < n:
        while i < n and line[i] in " ,":
            i += 1
        colon = line.find(":", i)
        if colon < 0:
            break
        key = line[i:colon].strip()
        i = colon + 1
        while i < n and line[i] == " ":
            i += 1
        if i < n and line[i] == '"':
            j = i + 1
            while line[j] != '"':
                j += 2 if line[j] == "\\" else 1
            value = json.loads(line[i:j + 1])
            i = j + 1
        else:
            j = line.find(",", i)
            j = n if j < 0 else j
            value = line[i:j].strip()
            i = j
        if len(value) > 2 and "x" in value and all(p.isdigit() for p in value.split("x", 1)):
            w, h = value.split("x", 1)
            out[f"{key}-1"], out[f"{key}-2"] = w, h
        else:
            out[key] = value
    return out


def parse_infotext(text: str) -> dict[str, str]:
    lines = text.split("\n")
    params = _pairs(lines[-1]) if lines[-1].count(":") >= 3 else {}
    body = lines[:-1] if params else lines
    prompt, negative, in_negative = [], [], False
    for line in body:
        if line.startswith("Negative prompt:"):
            in_negative, line = True, line[len("Negative prompt:"):]
        (negative if in_negative else prompt).append(line.strip())
    return {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative), **params}


def _png_text(path: Path) -> str:
    from PIL import Image

    with Image.open(path) as im:
        return str(im.info["parameters"])


def _addnet_hash(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha256(data[8 + int.from_bytes(data[:8], "little"):]).hexdigest()[:12]


@pytest.fixture(scope="module")
def lora_export(tiny_sd: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_lora_export(tiny_sd, tmp_path_factory.mktemp("lora") / "zwx-dog")


def test_lora_png_reads_back_in_a1111_with_every_field(lora_export: Path, tmp_path: Path) -> None:
    model = AvatarModel.load(lora_export)
    pack = model.generate(["zwx dog, watercolor"], 1, seed=11, num_inference_steps=2, guidance_scale=6.5,
                          negative_prompt="blurry, text", scheduler="dpmpp_2m_karras", lora_scale=0.75)
    (path,) = pack.save(tmp_path)
    info = parse_infotext(_png_text(path))

    kohya = lora_export / "zwx_lora_kohya.safetensors"
    assert info["Prompt"] == "zwx dog, watercolor <lora:zwx_lora_kohya:0.75>"
    assert info["Negative prompt"] == "blurry, text"
    assert (info["Steps"], info["Sampler"], info["Schedule type"]) == ("2", "DPM++ 2M", "Karras")
    assert float(info["CFG scale"]) == 6.5 and info["Seed"] == "11"
    assert (info["Size-1"], info["Size-2"]) == ("64", "64")
    assert info["RNG"] == "CPU"
    assert info["Lora hashes"] == f"zwx_lora_kohya: {_addnet_hash(kohya)}"
    assert "Version" not in info  # A1111 reads Version as its own release number
    assert "Model hash" not in info  # the base is a diffusers folder: no single file to hash

    # our own fields still regenerate the image bit for bit, the LoRA tag taken back out of the prompt
    assert Avatar.from_png(path).prompt == "zwx dog, watercolor"
    again = model.regenerate(path)
    assert np.array_equal(np.asarray(again.image), np.asarray(pack[0].image))
    assert again.parameters() == pack[0].parameters()


def test_full_model_png_carries_the_checkpoint_hash(tiny_sd: Path, tmp_path: Path) -> None:
    from lensa_for_all.training.single_file import write_single_file

    folder = tmp_path / "full"
    shutil.copytree(tiny_sd, folder)
    ckpt = write_single_file(folder, folder / "zwx_checkpoint.safetensors")
    (folder / "lensa_manifest.json").write_text(json.dumps({
        "method": "full", "token": "zwx", "subject_class": "dog", "resolution": 64,
        "checkpoint_weights": ckpt.name}))
    model = AvatarModel.load(folder)
    (avatar,) = model.generate("zwx dog", 1, seed=2, num_inference_steps=2, scheduler="euler_a")
    info = parse_infotext(avatar.a1111_parameters())
    assert info["Model hash"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()[:10]
    assert (info["Sampler"], info["Schedule type"], info["RNG"]) == ("Euler a", "Automatic", "CPU")
    assert info["Prompt"] == "zwx dog" and "Lora hashes" not in info


def test_each_scheduler_maps_to_a_sampler_and_schedule_a1111_knows() -> None:
    from lensa_for_all.generation.a1111 import sampler_and_schedule
    from lensa_for_all.generation.schedulers import SCHEDULERS, from_a1111_name

    schedules = {"Automatic", "Uniform", "Karras", "Exponential", "Polyexponential", "SGM Uniform"}
    for name in SCHEDULERS:
        sampler, schedule = sampler_and_schedule(name)
        assert schedule in schedules
        assert from_a1111_name(sampler, schedule) == name  # and it reads back to the same scheduler


def test_the_recorded_checkpoint_hash_is_used_only_while_the_file_is_unchanged(tmp_path: Path) -> None:
    from lensa_for_all.generation.a1111 import hashes_for

    ckpt = tmp_path / "m.safetensors"
    ckpt.write_bytes(b"0123456789")
    recorded = {"checkpoint_weights": ckpt.name, "checkpoint_hash": {"sha256_10": "feedc0ffee", "size": 10}}
    assert hashes_for(tmp_path, recorded).model_hash == "feedc0ffee"  # no 2 GB re-hash at every load
    ckpt.write_bytes(b"another file")  # replaced: the recorded hash no longer applies
    assert hashes_for(tmp_path, recorded).model_hash == hashlib.sha256(b"another file").hexdigest()[:10]
