"""Container parity: our SageMaker code in stand-ins for the images it runs in, not only in our own venv.

For the default training image and the default inference image (``backends/container_images.json``), a
virtual environment with the image's Python and the packages it preinstalls (at the image's versions)
gets the packaged ``requirements.txt`` installed exactly as the container does, then ``pip check``. The
training jobs go through ``SageMakerBackend`` on moto with the played container running that Python
(LoRA; full fine-tune; LoRA + text encoder + prior preservation; SDXL LoRA + both text encoders), and
the endpoint handler (``model_fn``/``input_fn``/``predict_fn``/``output_fn``) serves each artifact in the
inference stand-in, with no weight newly initialised. A full artifact is also loaded by transformers 4.57 and 5.5.

The stand-ins are cached (``lensa_for_all.testing.container_env``), keyed by what they hold; the first
build downloads each image's torch (a CUDA build, run on the CPU).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from lensa_for_all.backends.images import INFERENCE_IMAGE, TRAINING_IMAGE, TRAINING_IMAGES
from lensa_for_all.generation import endpoint_handler
from lensa_for_all.stack import PINNED
from lensa_for_all.testing.container_env import ContainerEnv, EnvSpec, build_env, find_python
from sagemaker_helpers import make_png_folder, play_on_start

ROLE = "arn:aws:iam::123456789012:role/LensaForAllSageMakerRole"
INFERENCE_HANDLER = Path(endpoint_handler.__file__)
# what an artifact's loader must never print: a weight that was not in the files
NEWLY_INITIALISED = ("newly initialized", "newly initialised", "were not initialized", "MISSING")

JOBS: dict[str, dict[str, Any]] = {
    "lora": dict(method="lora", train_text_encoder=False, with_prior_preservation=False),
    "full": dict(method="full", train_text_encoder=True, with_prior_preservation=False),
    "lora-te-prior": dict(method="lora", train_text_encoder=True, with_prior_preservation=True,
                          num_class_images=2, class_image_inference_steps=1, class_image_batch_size=2),
    # SDXL (two text encoders, pooled embeddings, micro-conditioning) on the tiny SDXL
    "sdxl-lora-te": dict(method="lora", train_text_encoder=True, with_prior_preservation=False),
}


def _config(tiny_sd: Path, job: str) -> Any:
    from lensa_for_all.config import TrainingConfig

    settings = dict(JOBS[job])
    method = settings.pop("method")
    return TrainingConfig.for_subject("dog", method, base_model=str(tiny_sd), resolution=64, max_train_steps=2,
                                      checkpointing_steps=2, lora_rank=4, mixed_precision="no", seed=3, **settings)


def _source_dir(tiny_sd: Path, job: str, dest: Path) -> Path:
    from lensa_for_all.training.trainer import DreamBoothTrainer

    return DreamBoothTrainer(_config(tiny_sd, job)).package_source_dir(dest)


def _requirements(tmp: Path, tiny_sd: Path) -> str:
    """The requirements.txt the packaged source dir carries (all three jobs share it)."""
    texts = {(_source_dir(tiny_sd, job, tmp / job) / "requirements.txt").read_text() for job in JOBS}
    assert len(texts) == 1, texts
    return texts.pop()


def _stand_in(spec: EnvSpec, requirements: str) -> ContainerEnv:
    try:
        find_python(spec.python)
    except LookupError as exc:
        pytest.skip(f"no stand-in for {spec.name}: {exc}")
    return build_env(spec, requirements)


@pytest.fixture(scope="module")
def requirements_txt(tiny_sd: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    return _requirements(tmp_path_factory.mktemp("req"), tiny_sd)


@pytest.fixture(scope="module")
def training_env(requirements_txt: str) -> ContainerEnv:
    return _stand_in(EnvSpec.for_image(TRAINING_IMAGE), requirements_txt)


@pytest.fixture(scope="module")
def inference_env() -> ContainerEnv:
    from lensa_for_all.backends.sagemaker import inference_requirements

    return _stand_in(EnvSpec.for_image(INFERENCE_IMAGE), inference_requirements())


def _assert_clean_install(env: ContainerEnv) -> None:
    assert env.install_log.rstrip().endswith("(exit 0)"), env.install_log[-3000:]
    assert "ERROR" not in env.install_log and "conflict" not in env.install_log.lower(), env.install_log[-3000:]
    assert env.pip_check_ok and "No broken requirements found" in env.pip_check, env.pip_check
    for dist, version in PINNED.items():
        assert env.version(dist) == version, dist
    # the image's own torch is the one that runs: our requirements never replace it
    assert env.version("torch") == dict(env.spec.packages)["torch"]


# ---- fast: the packaged code is complete without the library installed ----------------------------------


def test_packaged_source_dir_imports_everything_the_container_runs(tiny_sd: Path, tmp_path: Path) -> None:
    source = _source_dir(tiny_sd, "lora", tmp_path / "src")
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(source)!r})
        import lensa_for_all
        assert lensa_for_all.__file__.startswith({str(source)!r}), lensa_for_all.__file__
        import lensa_for_all.training.entry, lensa_for_all.training.loop, lensa_for_all.training.artifacts
        import lensa_for_all.generation.model, lensa_for_all.prompts.generator
        from lensa_for_all.generation import AvatarModel
        # the endpoint handler (code/inference.py) beside that package: model_fn's imports must all resolve
        import importlib.util
        spec = importlib.util.spec_from_file_location("inference", {str(INFERENCE_HANDLER)!r})
        handler = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(handler)
        try:
            handler.model_fn({str(tmp_path)!r})
        except RuntimeError as exc:
            assert "neither a diffusers pipeline" in str(exc), exc
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": ""}, check=False)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]
    assert (source / "requirements.txt").read_text().splitlines() == [f"{d}=={v}" for d, v in PINNED.items()]


def test_images_table_has_only_pythons_that_can_install_the_stack() -> None:
    from lensa_for_all.stack import MIN_PYTHON

    for image in (*TRAINING_IMAGES, INFERENCE_IMAGE):
        assert tuple(int(x) for x in image.python.split(".")) >= MIN_PYTHON, image
        assert image.source and dict(image.packages)["torch"] == image.pytorch


# ---- slow: the stand-ins ------------------------------------------------------------------------------


@pytest.mark.slow
def test_training_image_installs_the_source_dir_cleanly(training_env: ContainerEnv) -> None:
    _assert_clean_install(training_env)


@pytest.mark.slow
def test_inference_image_installs_the_endpoint_requirements_cleanly(inference_env: ContainerEnv) -> None:
    _assert_clean_install(inference_env)


def _backend() -> Any:
    from lensa_for_all.backends.sagemaker import SageMakerBackend

    backend = SageMakerBackend(role=ROLE, region="us-east-1", show_progress=False, poll_interval_s=0)
    backend.sleep = lambda _s: None
    return backend


_SERVE = textwrap.dedent("""
    import json, logging, os, sys
    model_dir = sys.argv[1]
    messages = []

    class Keep(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    for name in ("transformers", "diffusers"):
        logging.getLogger(name).addHandler(Keep())
    import transformers, diffusers
    transformers.logging.set_verbosity_warning()
    diffusers.logging.set_verbosity_warning()
    sys.path.insert(0, os.path.join(model_dir, "code"))  # as the inference toolkit does
    import inference
    model = inference.model_fn(model_dir)
    body = json.dumps({"inputs": "a photo of ohwx dog", "parameters": {"num_inference_steps": 2, "seed": 1}})
    answer = json.loads(inference.output_fn(inference.predict_fn(inference.input_fn(body, "application/json"),
                                                                 model), "application/json"))
    te_equal = None
    path = os.path.join(model_dir, "text_encoder", "model.safetensors")
    if os.path.isfile(path):
        import torch
        from safetensors.torch import load_file
        saved = load_file(path)
        loaded = model.pipeline.text_encoder.state_dict()
        te_equal = all(torch.equal(v.float(), saved.get(k if k.startswith("text_model.") else "text_model." + k,
                                                          saved.get(k)).float()) for k, v in loaded.items())
    import lensa_for_all
    print(json.dumps({"images": len(answer["images"]), "seeds": answer["seeds"], "scheduler":
                      answer["parameters"]["scheduler"], "messages": messages, "te_equal": te_equal,
                      "library": lensa_for_all.__file__, "transformers": transformers.__version__,
                      "pipeline": type(model.pipeline).__name__,
                      "diffusers": diffusers.__version__}))
""")


@pytest.mark.slow
@pytest.mark.parametrize("job", list(JOBS))
def test_job_trains_in_the_training_image_and_serves_in_the_inference_image(
        job: str, training_env: ContainerEnv, inference_env: ContainerEnv, aws_env: str, tiny_sd: Path,
        tiny_sdxl: Path, tmp_path: Path) -> None:
    sdxl = job.startswith("sdxl")
    source = _source_dir(tiny_sdxl if sdxl else tiny_sd, job, tmp_path / "src")
    photos = make_png_folder(tmp_path / "photos", count=4, size=72)
    backend = _backend()
    play_on_start(backend, tmp_path / "container", python=str(training_env.python))
    result = backend.run(source, {"instance": photos}, tmp_path / "out" / "model")
    out = result.output_dir
    assert out is not None
    container_log = next((tmp_path / "container").glob("*/container.log")).read_text()
    assert "lensa launcher" in container_log and "Traceback" not in container_log
    manifest = json.loads((out / "lensa_manifest.json").read_text())
    assert manifest["method"] == JOBS[job]["method"] and manifest["steps"] == 2
    assert manifest["model_family"] == ("sdxl" if sdxl else "sd1")
    assert (out / "code" / "inference.py").is_file() and (out / "code" / "lensa_for_all" / "generation").is_dir()
    assert (out / "code" / "requirements.txt").read_text() == "".join(f"{d}=={v}\n" for d, v in PINNED.items())
    if JOBS[job]["method"] == "full":
        assert (out / "tokenizer" / "vocab.json").is_file() and (out / "tokenizer" / "merges.txt").is_file()
    else:
        assert (out / "pytorch_lora_weights.safetensors").is_file()

    served = inference_env.run(["-c", _SERVE, str(out)], cwd=tmp_path, timeout=900)
    assert served.returncode == 0, served.stderr[-4000:]
    report = json.loads(served.stdout.strip().splitlines()[-1])
    assert report["images"] == 1 and report["seeds"] == [1] and report["scheduler"] == "dpmpp_2m_karras"
    assert report["pipeline"] == ("StableDiffusionXLPipeline" if sdxl else "StableDiffusionPipeline")
    assert report["library"].startswith(str(out / "code")), report["library"]
    assert report["transformers"] == PINNED["transformers"] and report["diffusers"] == PINNED["diffusers"]
    noisy = [m for m in report["messages"] + served.stderr.splitlines() if any(s in m for s in NEWLY_INITIALISED)]
    assert not noisy, noisy
    if JOBS[job]["method"] == "full":
        assert report["te_equal"] is True


@pytest.mark.slow
def test_single_training_channel_job_trains_on_it(training_env: ContainerEnv, tiny_sd: Path, tmp_path: Path) -> None:
    """``estimator.fit("s3://...")`` sends one channel named ``training``: the photos are in it."""
    source = _source_dir(tiny_sd, "lora", tmp_path / "src")
    photos = make_png_folder(tmp_path / "photos", count=4, size=72)
    model, output = tmp_path / "model", tmp_path / "output"
    env = {"SM_CHANNEL_TRAINING": str(photos), "SM_CHANNELS": '["training"]', "SM_MODEL_DIR": str(model),
           "SM_OUTPUT_DIR": str(output), "SM_OUTPUT_DATA_DIR": str(output / "data"), "SM_HPS": "{}",
           "SM_NUM_GPUS": "0", "LENSA_CHECKPOINT_DIR": str(tmp_path / "ck")}
    ran = training_env.run([str(source / "lensa_train.py")], cwd=source, env=env, timeout=900)
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
    assert (model / "pytorch_lora_weights.safetensors").is_file()
    assert json.loads((model / "lensa_manifest.json").read_text())["steps"] == 2
    assert not (output / "failure").exists()


_LOAD_TEXT_ENCODER = textwrap.dedent("""
    import json, sys
    from transformers import CLIPTextModel, CLIPTokenizer
    model, info = CLIPTextModel.from_pretrained(sys.argv[1] + "/text_encoder", output_loading_info=True)
    tokenizer = CLIPTokenizer.from_pretrained(sys.argv[1] + "/tokenizer")
    print(json.dumps({"missing": sorted(info["missing_keys"]), "ids": tokenizer("a photo of ohwx dog").input_ids}))
""")


@pytest.mark.slow
@pytest.mark.parametrize("transformers_version", ["4.57.6", "5.5.3"])
def test_full_artifact_loads_with_older_transformers(transformers_version: str, tiny_sd: Path, tmp_path: Path) -> None:
    """Users and endpoints on transformers 4.x / 5.5 read the full fine-tune's text encoder, not a random one."""
    from transformers import CLIPTokenizer

    from lensa_for_all.training.loop import train
    from training_helpers import make_subject_photos

    out = tmp_path / "out"
    train(_config(tiny_sd, "full"), make_subject_photos(tmp_path / "photos"), out, checkpoint_dir=tmp_path / "ck")
    spec = EnvSpec(name=f"transformers-{transformers_version}-loader", python="3.11",
                   packages={"torch": "2.13.0", "transformers": transformers_version})
    env = _stand_in(spec, "")
    assert env.version("transformers") == transformers_version
    loaded = env.run(["-c", _LOAD_TEXT_ENCODER, str(out)], timeout=600)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    report = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert report["missing"] == []
    assert not [line for line in loaded.stderr.splitlines() if any(s in line for s in NEWLY_INITIALISED)]
    assert report["ids"] == CLIPTokenizer.from_pretrained(out / "tokenizer")("a photo of ohwx dog").input_ids


@pytest.mark.slow
@pytest.mark.parametrize("image", [i for i in TRAINING_IMAGES if not i.default], ids=lambda i: i.name)
def test_alternative_training_image_installs_and_trains(image: Any, requirements_txt: str, tiny_sd: Path,
                                                        tmp_path: Path) -> None:
    """The tested alternatives (e.g. the HF training DLC, with its own diffusers/peft preinstalled) work too."""
    env = _stand_in(EnvSpec.for_image(image), requirements_txt)
    _assert_clean_install(env)
    source = _source_dir(tiny_sd, "lora-te-prior", tmp_path / "src")
    photos = make_png_folder(tmp_path / "photos", count=4, size=72)
    model, output = tmp_path / "model", tmp_path / "output"
    environ = {"SM_CHANNEL_INSTANCE": str(photos), "SM_MODEL_DIR": str(model), "SM_OUTPUT_DIR": str(output),
               "SM_OUTPUT_DATA_DIR": str(output / "data"), "SM_HPS": "{}", "SM_NUM_GPUS": "0",
               "LENSA_CHECKPOINT_DIR": str(tmp_path / "ck")}
    ran = env.run([str(source / "lensa_train.py")], cwd=source, env=environ, timeout=900)
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
    manifest = json.loads((model / "lensa_manifest.json").read_text())
    assert manifest["steps"] == 2 and manifest["train_text_encoder"] is True
    assert (model / "pytorch_lora_weights.safetensors").is_file()


@pytest.mark.slow
def test_launcher_reads_the_hf_token_from_s3_in_the_training_image(training_env: ContainerEnv, aws_env: str,
                                                                   tiny_sd: Path, tmp_path: Path) -> None:
    """The token stays out of the job's environment; the launcher fetches it with the image's own boto3."""
    import boto3

    from lensa_for_all.backends import container_launcher

    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="tokens")
    s3.put_object(Bucket="tokens", Key="run/secrets/abc/hf_token", Body=b"hf_private_token_123")
    source = _source_dir(tiny_sd, "lora", tmp_path / "src")
    script = textwrap.dedent(f"""
        import importlib.util, pathlib
        spec = importlib.util.spec_from_file_location("launcher", {container_launcher.__file__!r})
        launcher = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(launcher)
        print(launcher.child_environment(pathlib.Path({str(source)!r}))["HF_TOKEN"])
    """)
    aws = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    ran = training_env.run(["-c", script], env={**aws, "HF_TOKEN": "",
                                                "LENSA_HF_TOKEN_S3_URI": "s3://tokens/run/secrets/abc/hf_token"})
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert ran.stdout.strip().splitlines()[-1] == "hf_private_token_123"
