"""Faults in what we write and read: file modes, damaged state files, hostile or truncated tarballs, HEIC
without pillow-heif, and secrets kept out of the run state and logs."""

from __future__ import annotations

import io
import json
import os
import stat
import sys
import tarfile
from pathlib import Path

import pytest

from archive_helpers import tar_bytes
from lensa_for_all.archives import safe_extract
from lensa_for_all.atomic import write_json_atomic, write_text_atomic
from lensa_for_all.errors import RunStateError, UnsafeArchiveError
from lensa_for_all.pipeline.state import RunState
from lensa_for_all.redaction import is_secret_name, mask_secrets, options_for_state, options_from_state

# -- atomic writes respect the umask -------------------------------------------------------------------


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_get_the_mode_the_umask_gives(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        write_text_atomic(tmp_path / "a.txt", "x")
        write_json_atomic(tmp_path / "sub" / "b.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "sub" / "b.json").stat().st_mode) == mode


def test_extracted_model_files_and_folder_get_the_umask_mode(tmp_path: Path) -> None:
    arc = tmp_path / "m.tar.gz"
    arc.write_bytes(tar_bytes([(tarfile.TarInfo("unet/w.bin"), b"abc")]))
    old = os.umask(0o022)
    try:
        out = safe_extract(arc, tmp_path / "model")
    finally:
        os.umask(old)
    assert stat.S_IMODE((out / "unet" / "w.bin").stat().st_mode) == 0o644
    assert stat.S_IMODE(out.stat().st_mode) == 0o755


# -- a state file of the wrong shape -------------------------------------------------------------------


@pytest.mark.parametrize("data", [
    {"format": 1, "run": [], "stages": {}},
    {"format": 1, "run": {}, "stages": {"train": "done"}},
    {"format": 1, "run": {}, "stages": {"train": {"status": "done", "fingerprint": 3}}},
    {"format": 1, "run": {}, "stages": {"generate": {"status": "done", "fingerprint": "f", "outputs": []}}},
    {"format": 1, "run": {}, "stages": {"generate": {"status": "started", "fingerprint": "f", "progress": "x"}}},
    {"format": 1, "run": {}, "stages": {"generate": {"status": "started", "fingerprint": "f",
                                                     "progress": {"files": ["a.png"]}}}},
    {"format": 1, "run": {}, "stages": {"generate": {"status": "done", "fingerprint": "f",
                                                     "outputs": {"files": "a.png"}}}},
], ids=["run-list", "stage-str", "fp-int", "outputs-list", "progress-str", "files-list", "outputs-files-str"])
def test_a_state_file_of_the_wrong_shape_is_a_run_state_error(tmp_path: Path, data: dict) -> None:
    (tmp_path / "lensa_run.json").write_text(json.dumps(data))
    with pytest.raises(RunStateError, match="damaged.*Move it away"):
        RunState.load(tmp_path)


def test_a_wrong_shaped_state_file_stops_the_pipeline_with_a_run_state_error(tmp_path: Path, tiny_sd: Path) -> None:
    from lensa_for_all import Pipeline
    from lensa_for_all.testing.photos import make_photos

    photos = make_photos(tmp_path / "p", 4)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "lensa_run.json").write_text(json.dumps({"format": 1, "run": {}, "stages": {"photos": []}}))
    with pytest.raises(RunStateError, match="stage 'photos' is not an object"):
        Pipeline.from_folder(photos[0].parent, base_model=str(tiny_sd), run_dir=run_dir, progress=False).run(
            num_images=1)


# -- hostile and truncated tarballs ----------------------------------------------------------------------


def _member(name: str, data: bytes | None = b"x", kind: bytes = tarfile.REGTYPE) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    return info, (data if kind == tarfile.REGTYPE else None)


@pytest.mark.parametrize(("members", "message"), [
    ([_member(".")], "has no name"),
    ([_member("./")], "has no name"),
    ([_member("a"), _member("a/b")], "lies under 'a', which is a file"),
    ([_member("a/b"), _member("a")], "appears twice"),
    ([_member("a"), _member("a", kind=tarfile.DIRTYPE)], "both a file and a folder"),
    ([_member("w.bin"), _member("./w.bin")], "appears twice"),
], ids=["dot", "dot-slash", "file-then-child", "child-then-file", "file-then-dir", "duplicate"])
def test_name_clashes_are_refused_before_anything_is_written(tmp_path: Path, members: list, message: str) -> None:
    arc = tmp_path / "m.tar.gz"
    arc.write_bytes(tar_bytes(members))
    with pytest.raises(UnsafeArchiveError, match=message):
        safe_extract(arc, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["m.tar.gz"]


def test_a_member_count_over_the_cap_is_refused(tmp_path: Path) -> None:
    arc = tmp_path / "m.tar.gz"
    arc.write_bytes(tar_bytes([_member(f"f{i}") for i in range(12)]))
    with pytest.raises(UnsafeArchiveError, match="more than 10 members"):
        safe_extract(arc, tmp_path / "out", max_members=10)
    assert (safe_extract(arc, tmp_path / "out", max_members=12) / "f11").read_bytes() == b"x"


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_a_truncated_gzip_is_refused_whole(tmp_path: Path, keep: float) -> None:
    payload = os.urandom(200_000)  # incompressible, so the cut lands inside member data
    whole = tar_bytes([_member("a.bin", payload), _member("b.bin", payload)])
    arc = tmp_path / "m.tar.gz"
    arc.write_bytes(whole[: int(len(whole) * keep)])
    with pytest.raises(UnsafeArchiveError, match="truncated or corrupt"):
        safe_extract(arc, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["m.tar.gz"]


def test_a_gzip_with_a_bad_crc_is_refused(tmp_path: Path) -> None:
    whole = bytearray(tar_bytes([_member("a.bin", b"hello" * 1000)]))
    whole[-8] ^= 0xFF  # the CRC32 in the gzip trailer
    arc = tmp_path / "m.tar.gz"
    arc.write_bytes(bytes(whole))
    with pytest.raises(UnsafeArchiveError, match="truncated or corrupt"):
        safe_extract(arc, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# -- HEIC without pillow-heif ------------------------------------------------------------------------------


def test_heic_without_pillow_heif_is_one_reported_skip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pillow_heif
    from PIL import Image

    from lensa_for_all.photos import PhotoSet
    from lensa_for_all.testing.photos import make_photos

    folder = tmp_path / "p"
    make_photos(folder, 4)
    with Image.open(next(folder.glob("*.jpg"))) as im:
        heif = pillow_heif.from_pillow(im.convert("RGB"))
    buf = io.BytesIO()
    heif.save(buf, quality=80)
    (folder / "phone.heic").write_bytes(buf.getvalue())
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # import fails as if not installed
    ps = PhotoSet.from_folder(folder, subject_class="person")
    assert len(ps.photos) == 4
    (rejection,) = ps.rejected
    assert rejection.path.name == "phone.heic" and rejection.code == "unsupported"
    assert "pip install pillow-heif" in rejection.reason
    assert "pip install pillow-heif" in ps.report().to_json()


# -- secrets ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["hf_token", "HF_TOKEN", "MY_PASSWD", "db_password", "DB_PASS", "pass", "API_KEY",
                                  "aws_secret_access_key", "AWS_SESSION_TOKEN", "GITHUB_AUTH", "ServiceCredentials",
                                  "gcp-credential-json", "ssh_private", "SIGNING_CERT", "userPwd", "LOGIN_PW"])
def test_secret_names_are_recognised(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["kms_key_id", "VOLUME_KMS_KEY_ID", "instance_type", "bucket", "region", "PASSAGE",
                                  "compass", "PYTHONUNBUFFERED", "spot", "run_name"])
def test_ordinary_names_are_not_secret(name: str) -> None:
    assert not is_secret_name(name)


def test_masking_hides_every_secret_value() -> None:
    env = {"MY_PASSWD": "hunter2", "HF_TOKEN": "hf_abc", "PYTHONUNBUFFERED": "1", "EMPTY_TOKEN": ""}
    masked = mask_secrets(env)
    assert masked == {"MY_PASSWD": "***", "HF_TOKEN": "***", "PYTHONUNBUFFERED": "1", "EMPTY_TOKEN": ""}


def test_the_job_request_logged_at_debug_masks_a_passwd_variable() -> None:
    from lensa_for_all.backends.training_job import TrainingJobSpec

    spec = TrainingJobSpec(job_name="lensa-x", image_uri="1.dkr.ecr.us-east-1.amazonaws.com/i:1",
                           role_arn="arn:aws:iam::1:role/r", region="us-east-1", source_uri="s3://b/s.tar.gz",
                           output_uri="s3://b/o", channels={"instance": "s3://b/i/"},
                           environment={"MY_PASSWD": "hunter2", "DB_PASS": "s3cr3t", "PYTHONUNBUFFERED": "1"})
    text = json.dumps(spec.redacted())
    assert "hunter2" not in text and "s3cr3t" not in text and '"PYTHONUNBUFFERED": "1"' in text
    assert "hunter2" in json.dumps(spec.to_request())  # the request itself still carries it


def test_run_state_options_keep_no_secret_value_but_record_that_one_was_given() -> None:
    options = {"bucket": "b", "kms_key_id": "arn:aws:kms:k", "hf_token": "hf_SECRET",
               "environment": {"MY_PASSWD": "hunter2", "LOG_LEVEL": "debug"}}
    stored = options_for_state(options)
    text = json.dumps(stored)
    assert "hf_SECRET" not in text and "hunter2" not in text
    assert stored["kms_key_id"] == "arn:aws:kms:k" and stored["environment"] == {"LOG_LEVEL": "debug"}
    assert stored["secrets_given"] == ["hf_token", "environment.MY_PASSWD"]
    rebuilt, given = options_from_state(stored)
    assert "secrets_given" not in rebuilt and given == ["hf_token", "environment.MY_PASSWD"]


def test_an_hf_token_given_to_the_pipeline_never_reaches_the_run_state(tmp_path: Path, tiny_sd: Path) -> None:
    from lensa_for_all import Pipeline
    from lensa_for_all.errors import TooFewPhotosError
    from lensa_for_all.pipeline.progress import RunProgress
    from lensa_for_all.testing.photos import make_photos

    photos = make_photos(tmp_path / "p", 2)  # too few: the run stops after writing its state
    run_dir = tmp_path / "run"
    options = {"bucket": "b", "hf_token": "hf_SECRETVALUE", "environment": {"MY_PASSWD": "hunter2"}}
    with pytest.raises(TooFewPhotosError):
        Pipeline.from_folder(photos[0].parent, base_model=str(tiny_sd), run_dir=run_dir, sagemaker=options,
                             progress=False).run(num_images=1)
    text = "".join(p.read_text(errors="replace") for p in run_dir.rglob("*") if p.is_file())
    assert "hf_SECRETVALUE" not in text and "hunter2" not in text
    assert RunState.load(run_dir).run["sagemaker"]["secrets_given"] == ["hf_token", "environment.MY_PASSWD"]

    messages: list[str] = []

    class Recorder(RunProgress):
        def message(self, text: str) -> None:
            messages.append(text)

    loaded = Pipeline.load(run_dir, progress=Recorder())
    assert loaded.sagemaker_options == {"bucket": "b", "environment": {}}
    assert any("hf_token, environment.MY_PASSWD" in m and "HF_TOKEN" in m for m in messages)


def test_a_session_object_is_dropped_from_the_state_without_asking_for_it_again() -> None:
    stored = options_for_state({"boto_session": object(), "bucket": "b"})
    assert stored == {"bucket": "b"}
