"""AvatarModel on tiny random models: full folders, LoRA, s3:// tarballs, metadata, reproducibility, Ctrl-C."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from generation_helpers import make_lora_model, tar_folder
from lensa_for_all.errors import ConfigError, GenerationError, ModelNotFoundError
from lensa_for_all.generation import Avatar, AvatarModel, AvatarPack, parse_parameters, read_png_parameters
from lensa_for_all.generation.pack import CONTACT_SHEET_NAME, INDEX_NAME
from lensa_for_all.generation.schedulers import SCHEDULERS, a1111_name, from_a1111_name, make_scheduler
from lensa_for_all.prompts import Prompt

STEPS = 3


def _px(image: Any) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


@pytest.fixture(scope="module")
def model(tiny_sd: Path) -> AvatarModel:
    return AvatarModel.load(tiny_sd)


@pytest.fixture(scope="module")
def lora_dir(tiny_sd: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_lora_model(tiny_sd, tmp_path_factory.mktemp("lora") / "model")


# -- full folder, pack, metadata ----------------------------------------------------------------------
def test_generate_from_full_folder(model: AvatarModel) -> None:
    pack = model.generate(model.prompt_generator(), 3, seed=11, num_inference_steps=STEPS)
    assert isinstance(pack, AvatarPack) and len(pack) == 3 and not pack.interrupted
    assert [a.seed for a in pack] == [11, 12, 13]
    assert model.default_size == (64, 64)
    assert model.pipeline.vae.encoder is None  # text-to-image never encodes: not kept in memory
    for a in pack:
        assert a.image.size == (64, 64) and a.scheduler == "dpmpp_2m_karras" and a.num_inference_steps == STEPS
        assert a.prompt.count("ohwx person") == 1 and a.style and a.negative_prompt
        assert a.lora_scale is None and a.model == "tiny-sd"
        assert _px(a.image).std() > 1  # a real decoded image, not a blank
    assert np.abs(_px(pack[0].image) - _px(pack[1].image)).max() > 0


def test_save_writes_pngs_index_and_contact_sheet(model: AvatarModel, tmp_path: Path) -> None:
    from PIL import Image

    pack = model.generate(["portrait of ohwx person", Prompt("ohwx person, oil painting", "blurry", "oil")], 5,
                          seed=3, num_inference_steps=2, guidance_scale=6.0, scheduler="euler_a")
    paths = pack.save(tmp_path)
    assert len(paths) == 5 and len(set(paths)) == 5 and all(p.suffix == ".png" for p in paths)
    index = json.loads((tmp_path / INDEX_NAME).read_text())
    assert [e["file"] for e in index["avatars"]] == [p.name for p in paths]
    assert index["contact_sheet"] == CONTACT_SHEET_NAME
    with Image.open(tmp_path / CONTACT_SHEET_NAME) as sheet:  # 3 columns x 2 rows of 64 px, 4 px gaps
        assert sheet.size == (3 * 64 + 4 * 4, 2 * 64 + 3 * 4)
    with Image.open(paths[1]) as im:
        text = im.info["parameters"]
    assert text.splitlines()[0] == "ohwx person, oil painting"
    assert text.splitlines()[1] == "Negative prompt: blurry"
    assert ("Steps: 2, Sampler: Euler a, Schedule type: Automatic, CFG scale: 6.0, Seed: 4, Size: 64x64, "
            "Model: tiny-sd, Style: oil") in text
    assert read_png_parameters(paths[1]) == pack[1].parameters()
    # saving again into the same folder never overwrites: new unique names, one merged index
    again = pack.save(tmp_path)
    assert not set(again) & set(paths)
    assert len(json.loads((tmp_path / INDEX_NAME).read_text())["avatars"]) == 10
    loaded = AvatarPack.load(tmp_path)
    assert len(loaded) == 10 and (_px(loaded[0].image) == _px(pack[0].image)).all()


def test_parameters_round_trip_and_a1111_text() -> None:
    a1111 = ("masterpiece, ohwx man, by artist: x\nwith a second line\nNegative prompt: ugly, blurry\n"
             'Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 42, Size: 512x768, '
             'Model hash: abc, Model: "s3://b/k, v2", Version: v1.9.0')
    p = parse_parameters(a1111)
    assert p["prompt"] == "masterpiece, ohwx man, by artist: x\nwith a second line"
    assert p["negative_prompt"] == "ugly, blurry"
    assert (p["scheduler"], p["seed"], p["width"], p["height"], p["guidance_scale"]) == (
        "dpmpp_2m_karras", 42, 512, 768, 7.0)
    assert p["model"] == "s3://b/k, v2"
    with pytest.raises(GenerationError, match="incomplete"):
        parse_parameters("just a prompt\nSteps: 20, Sampler: Euler, CFG scale: 7")


def test_schedulers_by_name_keep_the_model_config(tiny_sd_v: Path) -> None:
    from diffusers import PNDMScheduler

    base = PNDMScheduler.from_pretrained(tiny_sd_v, subfolder="scheduler").config
    for name, spec in SCHEDULERS.items():
        sched = make_scheduler(name, base)
        assert type(sched).__name__ == spec.class_name
        assert sched.config.prediction_type == "v_prediction"
        assert from_a1111_name(a1111_name(name)) == name
    assert make_scheduler("DPM++ 2M Karras", base).config.use_karras_sigmas is True
    with pytest.raises(ConfigError, match="Unknown scheduler"):
        make_scheduler("dpm_fast", base)


def test_v_prediction_model_generates_with_its_own_defaults(tiny_sd_v: Path) -> None:
    m = AvatarModel.load(tiny_sd_v, scheduler="unipc")
    (a,) = m.generate("ohwx person", seed=1, num_inference_steps=2)
    assert m.pipeline.scheduler.config.prediction_type == "v_prediction"
    assert a.scheduler == "unipc" and a.image.size == m.default_size == (64, 64)


# -- reproducibility and interruption -------------------------------------------------------------------
def test_regenerate_from_png_is_bit_identical(model: AvatarModel, tmp_path: Path) -> None:
    pack = model.generate(model.prompt_generator(), 2, seed=77, num_inference_steps=STEPS, batch_size=1)
    paths = pack.save(tmp_path)
    again = model.regenerate(paths[1])
    assert again.parameters() == pack[1].parameters()
    assert (_px(again.image) == _px(Avatar.from_png(paths[1]).image)).all()
    assert (_px(again.image) == _px(pack[1].image)).all()


def test_regenerate_batched_image_from_its_png_alone(model: AvatarModel, tmp_path: Path) -> None:
    pack = model.generate(["ohwx person, a", "ohwx person, b", "ohwx person, c"], seed=5, num_inference_steps=2,
                          batch_size=2)
    assert [(a.batch_size, a.batch_index) for a in pack] == [(2, 0), (2, 1), (1, 0)]
    assert [m["seed"] for m in pack[1].batch_members] == [5, 6] and not pack[2].batch_members
    paths = pack.save(tmp_path)
    assert f"Batch size: 2, Batch pos: 1, Batch id: {pack[1].batch_id}" in pack[1].a1111_parameters()
    (tmp_path / INDEX_NAME).unlink()  # the PNG alone is enough
    params = read_png_parameters(paths[1])
    assert params["batch_index"] == 1 and params["batch_members"] == pack[1].parameters()["batch_members"]
    again = model.regenerate(paths[1])
    assert (_px(again.image) == _px(pack[1].image)).all()
    # the default on CPU is one image per call
    (a, b) = model.generate(["ohwx person, a", "ohwx person, b"], seed=5, num_inference_steps=2)
    assert a.batch_size == b.batch_size == 1 and not b.batch_members


def test_interrupted_pack_keeps_finished_images(model: AvatarModel, tmp_path: Path) -> None:
    calls = {"n": 0}

    def stop_in_third_image(pipe: Any, step: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] == 2 * STEPS + 2:  # two images done, the third one mid-way
            raise KeyboardInterrupt
        return kwargs

    pack = model.generate(model.prompt_generator(), 5, seed=1, num_inference_steps=STEPS, batch_size=1,
                          callback_on_step_end=stop_in_third_image, out_dir=tmp_path / "out")
    assert pack.interrupted and len(pack) == 2 and pack.requested == 5
    pngs = sorted((tmp_path / "out").glob("*.png"))
    assert [p.name for p in pngs] == [f"{i:03d}-{a.style}-{a.seed}.png" for i, a in enumerate(pack)]
    assert len(json.loads((tmp_path / "out" / INDEX_NAME).read_text())["avatars"]) == 2
    assert (tmp_path / "out" / CONTACT_SHEET_NAME).is_file()
    assert not list((tmp_path / "out").glob(".*tmp*"))  # no half-written files


def test_on_avatar_interrupt_and_iter_generate(model: AvatarModel) -> None:
    seen: list[Avatar] = []

    def stop_after_one(a: Avatar) -> None:
        seen.append(a)
        raise KeyboardInterrupt

    pack = model.generate("ohwx person", 3, seed=9, num_inference_steps=2, on_avatar=stop_after_one, batch_size=1)
    assert pack.interrupted and len(pack) == 1 and seen[0] is pack[0]
    it = model.iter_generate("ohwx person", 2, seed=9, num_inference_steps=2, batch_size=1)
    first = next(it)
    assert (_px(first.image) == _px(pack[0].image)).all()


def test_bad_inputs_raise_clear_errors(model: AvatarModel, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="not a trained model"):
        AvatarModel.load(tmp_path)
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "pytorch_lora_weights.safetensors").write_bytes(b"")
    with pytest.raises(ModelNotFoundError, match="base model"):
        AvatarModel.load(tmp_path / "w")
    with pytest.raises(ModelNotFoundError, match="neither"):
        AvatarModel.load(tmp_path / "missing")
    with pytest.raises(ModelNotFoundError, match="only models already in the Hugging Face cache"):
        AvatarModel.load("nobody/not-a-cached-model")
    with pytest.raises(ConfigError, match="multiples of 8"):
        model.generate("ohwx person", width=60)
    with pytest.raises(ConfigError, match="PromptGenerator"):
        model.generate("ohwx person", styles=["anime"])


# -- LoRA, s3, CLI --------------------------------------------------------------------------------------
def test_lora_on_base_model(tiny_sd: Path, lora_dir: Path, model: AvatarModel) -> None:
    lora = AvatarModel.load(lora_dir)
    assert lora.is_lora and lora.token == "zwx" and lora.subject_class == "dog"
    gen = lora.prompt_generator()
    assert gen.subject == "zwx dog" and gen.subject_kind == "pet"
    (a,) = lora.generate("zwx dog", seed=4, num_inference_steps=STEPS)
    (half,) = lora.generate("zwx dog", seed=4, num_inference_steps=STEPS, lora_scale=0.5)
    (off,) = lora.generate("zwx dog", seed=4, num_inference_steps=STEPS, lora_scale=0.0)
    (base,) = model.generate("zwx dog", seed=4, num_inference_steps=STEPS,
                             negative_prompt=a.negative_prompt)
    assert a.lora_scale == 1.0 and half.lora_scale == 0.5
    assert np.abs(_px(a.image) - _px(base.image)).mean() > 1  # the LoRA changes the image
    assert np.abs(_px(half.image) - _px(a.image)).mean() > 0
    assert np.abs(_px(off.image) - _px(base.image)).max() <= 1  # scale 0 is the base model
    assert "Lora scale: 1.0" in a.a1111_parameters()


def test_load_from_s3_tarball_once(tiny_sd: Path, aws_env: str, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="models")
    # a full model with its manifest, packed the way SageMaker packs SM_MODEL_DIR
    folder = tmp_path / "trained"
    shutil.copytree(tiny_sd, folder)
    (folder / "lensa_manifest.json").write_text(json.dumps({"method": "full", "base_model": "x", "token": "sks",
                                                            "subject_class": "cat", "resolution": 64}))
    s3.upload_file(str(tar_folder(folder, tmp_path / "model.tar.gz")), "models", "run1/model.tar.gz")
    cache = tmp_path / "cache"
    m = AvatarModel.load("s3://models/run1/model.tar.gz", cache_dir=cache)
    assert m.name == "s3://models/run1/model.tar.gz" and m.token == "sks" and m.subject_class == "cat"
    (a,) = m.generate(m.prompt_generator(), 1, seed=2, num_inference_steps=2)
    assert "sks cat" in a.prompt and a.image.size == (64, 64)

    import lensa_for_all.generation.sources as sources

    def no_download(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("downloaded twice")

    monkeypatch.setattr(sources, "safe_extract", no_download)
    AvatarModel.load("s3://models/run1/model.tar.gz", cache_dir=cache)  # cached: no second download
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        AvatarModel.load("s3://models/run2/model.tar.gz", cache_dir=cache)


def test_generate_cli(tiny_sd: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lensa_for_all.cli.main import main

    out = tmp_path / "avatars"
    assert main(["generate", str(tiny_sd), "--out", str(out), "-n", "2", "--steps", "2", "--seed", "8",
                 "--styles", "anime", "--scheduler", "ddim"]) == 0
    assert "2 of 2 avatars" in capsys.readouterr().out
    entries = json.loads((out / INDEX_NAME).read_text())["avatars"]
    assert [e["seed"] for e in entries] == [8, 9] and {e["scheduler"] for e in entries} == {"ddim"}
    assert all(e["style"] in {"anime_portrait", "studio_ghibli_like", "manga_ink", "chibi"} for e in entries)
    assert main(["generate", str(tmp_path / "nothing"), "--out", str(out)]) == 1
    assert "neither" in capsys.readouterr().err


def test_generate_through_endpoint_with_moto_queued_results(aws_env: str) -> None:
    import base64
    import io
    import urllib.request

    from PIL import Image

    def png(color: tuple[int, int, int]) -> str:
        buf = io.BytesIO()
        Image.new("RGB", (64, 64), color).save(buf, format="PNG")
        return base64.b64encode(buf.getvalue()).decode()

    results = [{"Body": json.dumps({"images": [png(c)], "seeds": [100 + i], "parameters": {}}),
                "ContentType": "application/json"} for i, c in enumerate([(255, 0, 0), (0, 0, 255)])]
    req = urllib.request.Request(f"{aws_env}/moto-api/static/sagemaker/endpoint-results", method="POST",
                                 data=json.dumps({"results": results, "region": "us-east-1"}).encode(),
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=10).read()

    model = AvatarModel.from_endpoint("lensa-ep-test", token="ohwx", subject_class="woman", default_size=(64, 64))
    sent: list[dict[str, Any]] = []
    runtime = model.runner.endpoint.session.client("sagemaker-runtime")  # type: ignore[attr-defined]
    runtime.meta.events.register("before-send.sagemaker-runtime.InvokeEndpoint",
                                 lambda request, **kw: sent.append(json.loads(request.body)))
    pack = model.generate(model.prompt_generator(), 2, seed=100, num_inference_steps=20, styles=["anime"])
    assert [a.image.getpixel((3, 3)) for a in pack] == [(255, 0, 0), (0, 0, 255)]
    assert [a.seed for a in pack] == [100, 101] and pack[0].model == "endpoint:lensa-ep-test"
    assert [s["parameters"]["seed"] for s in sent] == [100, 101]
    assert sent[0]["inputs"] == pack[0].prompt and "ohwx woman" in sent[0]["inputs"]
    assert sent[0]["parameters"] == {
        "negative_prompt": pack[0].negative_prompt, "num_inference_steps": 20, "guidance_scale":
        pack[0].guidance_scale, "height": 64, "width": 64, "seed": 100, "num_images": 1,
        "scheduler": "dpmpp_2m_karras"}


def test_device_and_dtype_choice() -> None:
    import torch

    from lensa_for_all.generation.device import choose_device, parse_dtype

    cpu = choose_device("cpu")
    assert (cpu.device, cpu.dtype, cpu.kind) == ("cpu", torch.float32, "cpu")
    assert choose_device("cpu", "bf16").dtype == torch.bfloat16
    assert parse_dtype("fp16") is torch.float16 and parse_dtype(torch.float32) is torch.float32
    with pytest.raises(ConfigError, match="Unknown dtype"):
        parse_dtype("int3")
    with pytest.raises(ConfigError, match="Unknown device"):
        choose_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA"):
            choose_device("cuda")
        assert choose_device().device in ("cpu", "mps")


def test_png_without_parameters_is_refused(tmp_path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    with pytest.raises(GenerationError, match="no 'parameters'"):
        Avatar.from_png(tmp_path / "plain.png")


@pytest.mark.gpu
def test_cuda_fp16_batched_generation_regenerates(tiny_sd: Path, tmp_path: Path) -> None:
    import torch

    m = AvatarModel.load(tiny_sd)
    assert m.runner.device.dtype == torch.float16  # type: ignore[attr-defined]
    pack = m.generate(m.prompt_generator(), 4, seed=3, num_inference_steps=STEPS, guidance_scale=7.0)
    assert {a.batch_size for a in pack} == {4}
    paths = pack.save(tmp_path)
    again = m.regenerate(paths[2])
    assert (_px(again.image) == _px(pack[2].image)).all()


def test_mixed_settings_render_in_full_batches() -> None:
    from lensa_for_all.generation.model import _batches
    from lensa_for_all.generation.runner import Job

    jobs = [Job(f"p{i}", "", i, 2, 7.0 if i % 2 else 6.5, "ddim", 64, 64) for i in range(5)]
    batches = list(_batches(jobs, 2, lambda w, h: 99))
    assert [[j.seed for j in b] for b in batches] == [[0, 2], [1, 3], [4]]
    assert [[j.seed for j in b] for b in _batches(jobs, None, lambda w, h: 1)] == [[i] for i in range(5)]


def test_loads_what_the_trainer_writes(tiny_sd: Path, tmp_path: Path) -> None:
    """A LoRA trained by DreamBoothTrainer's loop (UNet + text encoder) loads and changes the images."""
    from generation_helpers import make_subject_photos
    from lensa_for_all.config import TrainingConfig
    from lensa_for_all.training.loop import train

    cfg = TrainingConfig.for_subject(
        "person", "lora", base_model=str(tiny_sd), resolution=64, max_train_steps=2, num_class_images=2,
        class_image_inference_steps=1, class_image_batch_size=2, lora_rank=4, mixed_precision="no",
        with_prior_preservation=False, learning_rate=1e-2)
    train(cfg, make_subject_photos(tmp_path / "photos"), tmp_path / "out", checkpoint_dir=tmp_path / "ck")
    model = AvatarModel.load(tmp_path / "out")
    assert model.is_lora and model.token == cfg.token and model.subject_class == "person"
    (a,) = model.generate(model.prompt_generator(), 1, seed=3, num_inference_steps=2)
    (off,) = model.generate([a.prompt], seed=3, num_inference_steps=2, lora_scale=0.0,
                            negative_prompt=a.negative_prompt, guidance_scale=a.guidance_scale)
    assert f"{cfg.token} person" in a.prompt
    assert np.abs(_px(a.image) - _px(off.image)).max() > 0
