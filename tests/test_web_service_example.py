"""The FastAPI example (examples/web_service/app.py) through FastAPI's test client, on moto and the tiny model.

The app runs unchanged with the real SageMakerBackend; only the backend factory is swapped for the offline
example's ``played_backends``, whose ``start`` also plays the job's container on this machine (moto records
jobs but runs nothing) and, like SageMaker, reports a job whose container failed as ``Failed`` with the
failure file as its reason.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("multipart")

EXAMPLE_DIR = Path(__file__).resolve().parents[1] / "examples" / "web_service"
TERMINAL = ("done", "failed")


def _load_example() -> ModuleType:
    """examples/web_service/offline.py, which imports the app (app.py) from its folder."""
    spec = importlib.util.spec_from_file_location("lensa_web_service_offline", EXAMPLE_DIR / "offline.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


offline = _load_example()
web = offline.app


@pytest.fixture
def client_for(tmp_path: Path, tiny_sd: Path) -> Iterator[Callable[..., Any]]:
    from fastapi.testclient import TestClient

    clients: list[Any] = []

    def make(**overrides: Any) -> Any:
        settings = offline.tiny_settings(tmp_path / "service", tiny_sd, **overrides)
        client = TestClient(web.create_app(settings, make_backend=offline.played_backends(settings, tmp_path / "c")))
        clients.append(client.__enter__())
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def _photo_files(folder: Path, n: int) -> list[Path]:
    from lensa_for_all.testing import make_photos

    return make_photos(folder, n, size=(320, 400))


def _upload(client: Any, files: list[Path], subject_class: str = "person") -> Any:
    return client.post("/avatars", data={"subject_class": subject_class},
                       files=[("photos", (p.name, p.read_bytes(), "image/jpeg")) for p in files])


def _wait(client: Any, job_id: str) -> dict[str, Any]:
    """Poll the status until it is terminal; the job's thread ending first would be a bug."""
    future = client.app.state.service.futures[job_id]
    while True:
        finished = future.done()
        status = client.get(f"/avatars/{job_id}").json()
        if status["status"] in TERMINAL:
            return dict(status)
        assert not finished, f"the job ended but its status is still {status['status']!r}"
        time.sleep(0.05)


def _digest(paths: list[Path]) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]


@pytest.mark.slow
def test_upload_train_on_sagemaker_and_serve_the_pack(aws_env: str, client_for: Any, tmp_path: Path) -> None:
    import boto3
    from PIL import Image

    photos = _photo_files(tmp_path / "mine", 4)
    before = _digest(photos)
    client = client_for()

    answer = _upload(client, photos)
    assert answer.status_code == 202, answer.text
    body = answer.json()
    job_id = body["id"]
    assert answer.headers["location"] == f"/avatars/{job_id}"
    assert body["status"] in ("queued", "training") and body["photos"] == 4 and body["rejected"] == []
    assert client.get(f"/avatars/{job_id}/images/0.png").status_code in (409, 200)  # 409 unless already done

    status = _wait(client, job_id)
    assert status["status"] == "done", status
    assert [s for s, _t in status["history"]] == ["queued", "training", "generating", "done"]
    assert status["images"] == [f"/avatars/{job_id}/images/0.png", f"/avatars/{job_id}/images/1.png"]
    assert status["contact_sheet"] == f"/avatars/{job_id}/contact-sheet.jpg" and status["reason"] is None

    # trained by a SageMaker job (moto), whose artifacts the app downloaded
    jobs = boto3.client("sagemaker", region_name="us-east-1").list_training_jobs()["TrainingJobSummaries"]
    assert [j["TrainingJobName"] for j in jobs] == [status["job_name"]]
    assert status["job_name"].startswith(f"lensa-web-{job_id[:12]}") and status["cost_usd"] is not None
    folder = tmp_path / "service" / "jobs" / job_id
    assert (folder / "run" / "model" / "pytorch_lora_weights.safetensors").is_file()

    for n in (0, 1):
        png = client.get(status["images"][n])
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        with Image.open(io.BytesIO(png.content)) as im:
            assert im.format == "PNG" and im.size == (64, 64)
            im.convert("RGB").load()
    sheet = client.get(status["contact_sheet"])
    assert sheet.status_code == 200 and sheet.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(sheet.content)) as im:
        assert im.format == "JPEG" and im.width > 64
        im.load()
    assert client.get(f"/avatars/{job_id}/images/2.png").status_code == 404

    # nothing the user sent was modified: the client's files and the service's copies are byte-identical
    assert _digest(photos) == before
    assert _digest(sorted((folder / "uploads").iterdir())) == before


def test_unusable_photos_get_400_with_the_reasons_and_are_not_kept(aws_env: str, client_for: Any,
                                                                   tmp_path: Path) -> None:
    photos = _photo_files(tmp_path / "mine", 2)
    notes = tmp_path / "mine" / "notes.txt"
    notes.write_text("not a photo")
    client = client_for()

    answer = _upload(client, [*photos, notes])
    assert answer.status_code == 400
    detail = answer.json()["detail"]
    assert detail["message"].startswith("Only 2 usable photos; at least 4 are needed")
    assert str(tmp_path) not in answer.text  # no server paths in what the client sees
    assert [r["photo"] for r in detail["rejected"]] == ["notes.txt"] and detail["rejected"][0]["reason"]
    assert list((tmp_path / "service" / "jobs").iterdir()) == []  # the uploads were deleted
    assert client.app.state.service.futures == {}  # and nothing was queued

    assert _upload(client, photos, subject_class="../../etc").status_code == 400
    assert client.get("/avatars/0123456789abcdef0123456789abcdef").status_code == 404
    assert client.get("/avatars/..%2F..%2Fetc").status_code == 404


def test_cost_guard_fails_the_request_with_its_reason_before_launching(aws_env: str, client_for: Any,
                                                                       tmp_path: Path) -> None:
    import boto3

    client = client_for(max_cost_usd=0.0001)
    job_id = _upload(client, _photo_files(tmp_path / "mine", 4)).json()["id"]
    status = _wait(client, job_id)
    assert status["status"] == "failed"
    assert "over max_cost_usd=$0.00" in status["reason"] and "nothing was launched" in status["reason"]
    assert boto3.client("sagemaker", region_name="us-east-1").list_training_jobs()["TrainingJobSummaries"] == []
    answer = client.get(f"/avatars/{job_id}/images/0.png")
    assert answer.status_code == 409 and "failed, not done" in answer.json()["detail"]


@pytest.mark.slow
def test_a_failed_training_job_reports_why(aws_env: str, client_for: Any, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    client = client_for(base_model=str(missing))
    job_id = _upload(client, _photo_files(tmp_path / "mine", 4)).json()["id"]
    status = _wait(client, job_id)
    assert status["status"] == "failed" and status["images"] == [] and status["contact_sheet"] is None
    assert [s for s, _t in status["history"]] == ["queued", "training", "failed"]
    assert status["job_name"].startswith(f"lensa-web-{job_id[:12]}")
    assert status["reason"].startswith(f"Training job {status['job_name']} failed: AlgorithmError: ModelNotFoundError")
    assert str(missing) in status["reason"]  # the container's own failure file says which model is missing


@pytest.mark.slow
def test_a_restarted_service_reattaches_to_the_running_job(aws_env: str, client_for: Any, tmp_path: Path) -> None:
    """The process dies while following the SageMaker job; a new app on the same folder finishes the request
    from that job (re-attached, not launched again)."""
    import boto3

    first = client_for()
    service = first.app.state.service
    make_backend = service.make_backend

    def dies_while_following(job_id: str) -> Any:
        backend = make_backend(job_id)
        calls = {"n": 0}

        def die_on_second(**_: Any) -> None:  # the player's describe is the first, the backend's follow the second
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt  # stands in for the process being killed

        backend.aws.client("sagemaker").meta.events.register("before-call.sagemaker.DescribeTrainingJob",
                                                             die_on_second)
        return backend

    service.make_backend = dies_while_following
    job_id = _upload(first, _photo_files(tmp_path / "mine", 4)).json()["id"]
    with pytest.raises(KeyboardInterrupt):
        service.futures[job_id].result()
    assert first.get(f"/avatars/{job_id}").json()["status"] == "training"  # left behind unfinished

    second = client_for()  # same work folder: the lifespan picks the request up again
    assert list(second.app.state.service.futures) == [job_id]
    status = _wait(second, job_id)
    assert status["status"] == "done" and len(status["images"]) == 2
    jobs = boto3.client("sagemaker", region_name="us-east-1").list_training_jobs()["TrainingJobSummaries"]
    assert [j["TrainingJobName"] for j in jobs] == [status["job_name"]]  # one job: re-attached, not relaunched
    assert second.get(status["images"][1]).status_code == 200
