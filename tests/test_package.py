"""The package's own contract: lazy imports, errors, atomic writes, safe archives, the CLI entry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from archive_helpers import HOSTILE_KINDS, hostile_member, tar_bytes
from lensa_for_all.archives import safe_extract
from lensa_for_all.atomic import atomic_path, write_json_atomic
from lensa_for_all.errors import LensaError, UnsafeArchiveError

HEAVY = ("torch", "diffusers", "transformers", "boto3", "sagemaker", "cv2")


def _imported_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        check=True, capture_output=True, text=True,
    ).stdout.strip().splitlines()[-1]
    return {m.split(".")[0] for m in json.loads(out)}


def test_import_is_light() -> None:
    mods = _imported_after("import lensa_for_all")
    assert not mods & set(HEAVY), mods & set(HEAVY)


def test_cli_help_is_light() -> None:
    code = (
        "import sys\nfrom lensa_for_all.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
    )
    mods = _imported_after(code)
    assert not mods & set(HEAVY), mods & set(HEAVY)


def test_console_script_version() -> None:
    out = subprocess.run([sys.executable, "-m", "lensa_for_all", "--version"], capture_output=True, text=True)
    assert out.returncode == 0
    import lensa_for_all

    assert lensa_for_all.__version__ in out.stdout


def test_unknown_public_name_raises_attribute_error() -> None:
    import lensa_for_all

    with pytest.raises(AttributeError, match="NoSuchThing"):
        lensa_for_all.NoSuchThing  # noqa: B018


def test_errors_share_one_base() -> None:
    import lensa_for_all.errors as errors

    for name in errors.__all__:
        assert issubclass(getattr(errors, name), LensaError)


def test_atomic_path_leaves_nothing_on_error(tmp_path: Path) -> None:
    dest = tmp_path / "out.json"
    write_json_atomic(dest, {"a": 1})
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert json.loads(dest.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    path.write_bytes(tar_bytes(members))
    return path


def test_safe_extract_extracts_files(tmp_path: Path) -> None:
    arc = _tar(tmp_path / "ok.tar.gz", [(tarfile.TarInfo("model/unet/w.safetensors"), b"abc")])
    out = safe_extract(arc, tmp_path / "x")
    assert (out / "model/unet/w.safetensors").read_bytes() == b"abc"


@pytest.mark.parametrize(("kind", "match"), HOSTILE_KINDS)
def test_safe_extract_refuses_hostile_archives(tmp_path: Path, kind: str, match: str) -> None:
    info, data = hostile_member(kind)
    arc = _tar(tmp_path / "bad.tar.gz", [(tarfile.TarInfo("good.txt"), b"fine"), (info, data)])
    with pytest.raises(UnsafeArchiveError, match=match):
        safe_extract(arc, tmp_path / "x", max_bytes=1024)
    assert not (tmp_path / "x").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.tar.gz"]
    assert not Path("/tmp/lensa-evil").exists()


def test_tiny_sd_loads_and_generates(tiny_sd: Path) -> None:
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd)
    img = pipe("a photo of ohwx person", num_inference_steps=2, height=64, width=64,
               generator=torch.Generator().manual_seed(0)).images[0]
    assert img.size == (64, 64)
    assert len(pipe.tokenizer("a photo of ohwx person").input_ids) < 12
    assert pipe.tokenizer.model_max_length == 77


def test_tiny_gpt2_generates(tiny_gpt2: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_gpt2)
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2)
    ids = tok("a photo of ohwx person", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=tok.eos_token_id)
    assert out.shape[1] == ids.shape[1] + 5
    assert os.path.isfile(tiny_gpt2 / "model.safetensors")
