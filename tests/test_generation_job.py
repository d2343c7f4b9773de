"""One record for what an image is rendered from: ``Job``, which ``Avatar`` extends and endpoints are sent."""

from __future__ import annotations

import importlib
import json
import sys

import attrs
import pytest
from PIL import Image

from lensa_for_all.errors import ConfigError, GenerationError
from lensa_for_all.generation import Avatar, AvatarPack, Job, read_png_parameters
from lensa_for_all.generation.a1111 import ModelHashes
from lensa_for_all.generation.endpoint_runner import endpoint_params
from lensa_for_all.generation.model import _avatar

JOB = Job(prompt='a photo of ohwx person, "oil" painting: bold', negative_prompt="blurry, lowres",
          seed=1234567, num_inference_steps=7, guidance_scale=6.25, scheduler="euler_a", width=64, height=72,
          lora_scale=0.8, style="oil-painting")


def test_avatar_is_a_job_with_the_same_field_definitions() -> None:
    job_fields, avatar_fields = attrs.fields(Job), attrs.fields_dict(Avatar)
    assert issubclass(Avatar, Job)
    assert [f.name for f in attrs.fields(Avatar)][:len(job_fields)] == [f.name for f in job_fields]
    for field in job_fields:
        mine = avatar_fields[field.name]
        assert (mine.type, mine.default, mine.kw_only) == (field.type, field.default, field.kw_only), field.name
    # what Avatar adds is provenance, none of it a render setting
    assert set(avatar_fields) - {f.name for f in job_fields} == {
        "image", "model", "batch_size", "batch_index", "batch_id", "batch_members", "model_hash", "lora_name",
        "lora_hash", "rng", "likeness"}


def test_job_and_batch_key_stay_importable_from_runner() -> None:
    from lensa_for_all.generation import job, runner

    assert runner.Job is job.Job is Job and runner.batch_key is job.batch_key


def test_avatar_job_round_trips_through_png_and_pack(tmp_path) -> None:
    image = Image.new("RGB", (JOB.width, JOB.height), (200, 40, 90))
    hashes = ModelHashes(model_hash="0123456789", lora_name="ohwx_lora", lora_hash="abcdef012345")
    avatar = _avatar(JOB, image, model="runs/me", batch=[JOB], batch_index=0, batch_id=None, hashes=hashes,
                     rng="CPU")
    assert avatar.job == JOB and type(avatar.job) is Job
    assert (avatar.model, avatar.lora_name, avatar.rng) == ("runs/me", "ohwx_lora", "CPU")

    path = avatar.save(tmp_path / "one.png")
    text = read_png_parameters(path)
    assert "<lora:ohwx_lora:0.8>" not in text["prompt"]  # the tag A1111 needs is stripped on the way back
    again = Avatar.from_png(path)
    assert again.job == JOB
    assert again.image.size == (JOB.width, JOB.height)
    assert Job.from_parameters(text) == JOB
    assert Job.from_parameters(again.parameters()) == JOB

    AvatarPack([avatar]).save(tmp_path / "pack")
    index = json.loads((tmp_path / "pack" / "avatars.json").read_text())["avatars"][0]
    assert set(index) - {"file"} == set(avatar.parameters())
    (loaded,) = AvatarPack.load(tmp_path / "pack")
    assert loaded.job == JOB and loaded.parameters() == avatar.parameters()


def test_avatars_compare_by_identity_jobs_by_value() -> None:
    image = Image.new("RGB", (8, 8))
    first, second = (_avatar(JOB, image, model="m", batch=[JOB], batch_index=0, batch_id=None) for _ in range(2))
    assert first != second and first == first and first.job == second.job
    assert len({first, second}) == 2  # hashable although batch_members holds dicts
    assert first != JOB and JOB.__eq__(first) is NotImplemented  # a job never equals an avatar


def test_job_from_parameters_reads_a1111_names_and_says_what_is_missing() -> None:
    params = {**attrs.asdict(JOB), "scheduler": "Euler a", "model": "elsewhere", "batch_size": 1, "likeness": 0.9}
    assert Job.from_parameters(params) == JOB
    assert Job.from_parameters({**params, "negative_prompt": None, "style": ""}).negative_prompt == ""
    with pytest.raises(GenerationError, match="lack 'seed'"):
        Job.from_parameters({k: v for k, v in params.items() if k != "seed"})
    with pytest.raises(GenerationError, match="malformed"):
        Job.from_parameters({**params, "width": "wide"})
    with pytest.raises(ConfigError, match="Unknown scheduler 'warp'"):
        Job.from_parameters({**params, "scheduler": "warp"})


def test_endpoint_request_parameters_come_from_the_job() -> None:
    from lensa_for_all.generation import endpoint_handler

    params = endpoint_params(JOB)
    assert params.pop("num_images") == 1
    assert params == {name: getattr(JOB, name) for name in params}
    # exactly the handler's contract, and the handler takes the values as they are
    assert set(params) | {"num_images"} == set(endpoint_handler.DEFAULTS)
    request = json.dumps({"inputs": JOB.prompt, "parameters": endpoint_params(JOB)})
    parsed = endpoint_handler.input_fn(request, "application/json")
    assert parsed["inputs"] == JOB.prompt
    assert {k: parsed["parameters"][k] for k in params} == params


def test_old_handler_path_warns_and_is_the_new_module(monkeypatch) -> None:
    from lensa_for_all.generation import endpoint_handler

    monkeypatch.delitem(sys.modules, "lensa_for_all.backends.inference", raising=False)
    with pytest.warns(DeprecationWarning, match=r"backends\.inference moved to lensa_for_all\.generation\."
                                                r"endpoint_handler.*goes in 0\.3\.0"):
        old = importlib.import_module("lensa_for_all.backends.inference")
    assert old is endpoint_handler and old.predict_fn is endpoint_handler.predict_fn
