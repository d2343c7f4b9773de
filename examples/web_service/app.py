"""A small web service around lensa-for-all: photos in, DreamBooth training on Amazon SageMaker, avatars out.

Endpoints (README.md next to this file has examples):

    POST /avatars                        photos + subject class -> 202 {"id": ...}, or 400 with the photo check
    GET  /avatars/{id}                   status: queued, training, generating, done or failed (with the reason)
    GET  /avatars/{id}/images/{n}.png    the n-th avatar (from 0), once done
    GET  /avatars/{id}/contact-sheet.jpg all avatars on one sheet, once done

Each request gets its own folder under ``Settings.work_dir`` (``jobs/<id>/``: the uploads, the
:class:`~lensa_for_all.Pipeline` run folder, the avatars and ``status.json``). Training runs as a
SageMaker training job; a thread pool in this process follows it and then renders the avatars locally.
The uploads are only read: the pipeline crops copies of them into its run folder.

Run it for real (AWS credentials in the environment, see README.md)::

    LENSA_ROLE=arn:aws:iam::123456789012:role/LensaForAllSageMakerRole uvicorn --factory app:create_app
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import attrs
from fastapi import FastAPI, File, Form, HTTPException, UploadFile
from fastapi.responses import FileResponse, JSONResponse

from lensa_for_all import LensaError, Pipeline, TooFewPhotosError
from lensa_for_all.atomic import write_json_atomic
from lensa_for_all.pipeline.progress import RunProgress
from lensa_for_all.training.backend import Backend

if TYPE_CHECKING:
    from lensa_for_all.backends.sagemaker import SageMakerBackend

log = logging.getLogger("lensa_web")

FINISHED = ("done", "failed")  # the other statuses: queued, training, generating
_JOB_ID = re.compile(r"[0-9a-f]{32}")
_SUBJECT_CLASS = re.compile(r"[a-z][a-z ]{1,29}")
_PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif", ".avif", ".tif", ".tiff", ".bmp"}
_CHUNK = 1 << 20


def _env_float(name: str) -> float | None:
    value = os.environ.get(name)
    return float(value) if value else None


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


@attrs.frozen
class Settings:
    """What the service needs to know; :meth:`from_env` reads it from ``LENSA_*`` environment variables.

    ``training`` holds extra :class:`~lensa_for_all.TrainingConfig` fields over the subject preset and
    ``generation`` extra :meth:`~lensa_for_all.Pipeline.run` settings (``num_inference_steps``, ...);
    tests use them to shrink the run to the tiny offline model.
    """

    work_dir: Path = attrs.field(converter=Path)
    role: str | None = None
    bucket: str | None = None
    region: str | None = None
    instance_type: str = "ml.g5.2xlarge"
    spot: bool = True
    max_cost_usd: float | None = 2.0
    base_model: str | None = None  # None: the library's default Stable Diffusion checkpoint
    max_train_steps: int | None = None  # None: the preset's photo-count-based number of steps
    num_images: int = attrs.field(default=40, validator=attrs.validators.in_(range(1, 201)))
    max_photos: int = 20
    max_photo_mb: float = 25.0
    workers: int = 2
    training: dict[str, Any] = attrs.field(factory=dict)
    generation: dict[str, Any] = attrs.field(factory=dict)
    sagemaker: dict[str, Any] = attrs.field(factory=dict)  # any other SageMakerBackend keyword

    @classmethod
    def from_env(cls) -> Settings:
        """``LENSA_WEB_DIR``, ``LENSA_ROLE``, ``LENSA_BUCKET``, ``LENSA_REGION``, ``LENSA_INSTANCE_TYPE``,
        ``LENSA_SPOT``, ``LENSA_MAX_COST_USD``, ``LENSA_BASE_MODEL``, ``LENSA_STEPS``, ``LENSA_NUM_IMAGES``,
        ``LENSA_WEB_WORKERS`` (the same names the ``lensa-for-all`` command reads, where it has them)."""
        env = os.environ.get
        return cls(
            work_dir=env("LENSA_WEB_DIR", "lensa-web"),
            role=env("LENSA_ROLE") or None,
            bucket=env("LENSA_BUCKET") or None,
            region=env("LENSA_REGION") or None,
            instance_type=env("LENSA_INSTANCE_TYPE", "ml.g5.2xlarge"),
            spot=env("LENSA_SPOT", "true").strip().lower() not in ("0", "false", "no", "off"),
            max_cost_usd=_env_float("LENSA_MAX_COST_USD") or 2.0,
            base_model=env("LENSA_BASE_MODEL") or None,
            max_train_steps=_env_int("LENSA_STEPS"),
            num_images=_env_int("LENSA_NUM_IMAGES") or 40,
            workers=_env_int("LENSA_WEB_WORKERS") or 2,
        )

    def sagemaker_options(self, job_id: str) -> dict[str, Any]:
        """``SageMakerBackend`` keywords for one request: a SageMaker run named after the job id."""
        return dict(role=self.role, bucket=self.bucket, region=self.region, instance_type=self.instance_type,
                    spot=self.spot, max_cost_usd=self.max_cost_usd, run_name=f"web-{job_id[:12]}",
                    show_progress=False, stop_on_interrupt=False, **self.sagemaker)

    def sagemaker_backend(self, job_id: str) -> SageMakerBackend:
        """The training backend for one request."""
        from lensa_for_all import SageMakerBackend

        return SageMakerBackend(**self.sagemaker_options(job_id))


BackendFactory = Callable[[str], Backend]
"""Job id -> the backend that trains it (default: :meth:`Settings.sagemaker_backend`)."""


class JobStore:
    """One folder per request, ``jobs/<id>/``, with its state in ``status.json`` (written atomically).

    The files are the truth, so a status survives a restart and any worker process can answer.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root) / "jobs"
        self._lock = threading.Lock()

    def create(self) -> str:
        job_id = uuid.uuid4().hex  # random: knowing the id is what lets a client see the avatars
        (self.root / job_id / "uploads").mkdir(parents=True)
        return job_id

    def folder(self, job_id: str) -> Path:
        if not _JOB_ID.fullmatch(job_id) or not (self.root / job_id / "status.json").is_file():
            raise HTTPException(404, f"No avatar request {job_id!r}.")
        return self.root / job_id

    def read(self, job_id: str) -> dict[str, Any]:
        return dict(json.loads((self.folder(job_id) / "status.json").read_text(encoding="utf-8")))

    def write(self, job_id: str, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into the job's status and save it."""
        with self._lock:
            path = self.root / job_id / "status.json"
            status: dict[str, Any] = (json.loads(path.read_text(encoding="utf-8")) if path.is_file()
                                      else {"id": job_id, "history": []})
            now = time.time()
            if fields.get("status", status.get("status")) != status.get("status"):
                status["history"].append([fields["status"], now])  # when each status began
            status.update(fields, updated_at=now)
            write_json_atomic(path, status)
        return dict(status)


class JobProgress(RunProgress):
    """Turns the pipeline's stage events into the job's status (``training`` covers the photo preparation)."""

    _STATUS = {"photos": "training", "train": "training", "generate": "generating"}

    def __init__(self, store: JobStore, job_id: str) -> None:
        self.store, self.job_id = store, job_id
        self._last = 0.0

    def stage_started(self, stage: str, *, total: int | None = None, detail: str = "") -> None:
        self.store.write(self.job_id, status=self._STATUS.get(stage, "training"),
                         progress={"stage": stage, "completed": 0, "total": total})

    def stage_progress(self, stage: str, completed: int, total: int | None, *, info: str = "") -> None:
        now = time.monotonic()
        if now - self._last >= 1.0 or completed == total:  # at most one status write a second
            self._last = now
            self.store.write(self.job_id, progress={"stage": stage, "completed": completed, "total": total})


class AvatarService:
    """Accepts requests and runs them: the photo check at once, the rest on a thread pool."""

    def __init__(self, settings: Settings, make_backend: BackendFactory | None = None) -> None:
        self.settings = settings
        self.store = JobStore(settings.work_dir)
        self.make_backend = make_backend or settings.sagemaker_backend
        self.executor = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="lensa-job")
        self.futures: dict[str, Future[None]] = {}  # job id -> its run on the pool (this process only)

    def submit(self, photos: list[UploadFile], subject_class: str) -> dict[str, Any]:
        """Save and check the photos; queue the job. Raises HTTPException 400/413 for unusable input."""
        from lensa_for_all import PhotoSet

        subject_class = subject_class.strip().lower()
        if not _SUBJECT_CLASS.fullmatch(subject_class):
            raise HTTPException(400, "subject_class must be a word such as person, man, woman, dog or cat.")
        if not photos:
            raise HTTPException(400, "Send 4-20 photos of the subject as 'photos' form fields.")
        if len(photos) > self.settings.max_photos:
            raise HTTPException(400, f"{len(photos)} photos sent; send at most {self.settings.max_photos} "
                                     "(10-20 varied photos work best).")
        job_id = self.store.create()
        folder = self.store.root / job_id
        try:
            names = self._save_uploads(photos, folder / "uploads")
            try:
                photoset = PhotoSet.from_folder(folder / "uploads", subject_class=subject_class)
            except TooFewPhotosError as exc:  # the first line says how many are usable; drop the server path
                message = str(exc).splitlines()[0].replace(f" in {folder / 'uploads'}", "")
                raise HTTPException(400, {"message": message, "rejected": _rejections(exc.report, names)}) from exc
            except LensaError as exc:
                raise HTTPException(400, str(exc)) from exc
        except HTTPException:
            shutil.rmtree(folder, ignore_errors=True)  # keep nobody's photos that will not be used
            raise
        status = self.store.write(job_id, status="queued", subject_class=subject_class, created_at=time.time(),
                                  photos=len(photoset), rejected=_rejections(photoset.report(), names),
                                  advice=photoset.advice(), progress=None, reason=None, images=[],
                                  contact_sheet=None, job_name=None, cost_usd=None)
        self.futures[job_id] = self.executor.submit(self.run_job, job_id)
        return status

    def _save_uploads(self, photos: list[UploadFile], dest: Path) -> dict[str, str]:
        """Copy each upload to ``dest/photo-NN<suffix>`` (never a client-chosen path); saved name -> sent name."""
        limit = int(self.settings.max_photo_mb * (1 << 20))
        names: dict[str, str] = {}
        for i, upload in enumerate(photos):
            sent = Path(upload.filename or f"photo-{i}").name
            suffix = Path(sent).suffix.lower()
            saved = f"photo-{i:02d}{suffix if suffix in _PHOTO_SUFFIXES else '.bin'}"
            size = 0
            with open(dest / saved, "xb") as out:
                while chunk := upload.file.read(_CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise HTTPException(413, f"{sent} is over {self.settings.max_photo_mb:g} MB; "
                                                 "send photos of at most that size.")
                    out.write(chunk)
            names[saved] = sent
        return names

    def run_job(self, job_id: str) -> None:
        """Train (SageMaker) and render (here) one job; every outcome ends in its status."""
        folder = self.store.root / job_id
        status = self.store.read(job_id)
        try:
            pipeline = Pipeline(folder / "uploads", subject_class=status["subject_class"],
                                trainer=self._trainer(status["subject_class"]), backend=self.make_backend(job_id),
                                run_dir=folder / "run", progress=JobProgress(self.store, job_id))
            result = pipeline.run(num_images=self.settings.num_images, out_dir=folder / "avatars",
                                  **self.settings.generation)
        except LensaError as exc:  # written for the user: the first line says what went wrong
            log.warning("avatar request %s failed: %s", job_id, exc)
            self.store.write(job_id, status="failed", reason=str(exc).splitlines()[0],
                             job_name=getattr(exc, "job_name", None))  # a failed SageMaker job's name
        except Exception:
            log.exception("avatar request %s failed", job_id)
            self.store.write(job_id, status="failed", reason="Internal error; the service log has the details.")
        else:
            self.store.write(job_id, status="done", progress=None, images=[p.name for p in result.avatars],
                             contact_sheet=result.contact_sheet.name if result.contact_sheet else None,
                             job_name=result.job_name, cost_usd=result.cost_usd)

    def resume_unfinished(self) -> list[str]:
        """Queue again the requests an earlier process left unfinished (it was restarted or crashed).

        The pipeline's run folder recorded how far each got: finished stages are reused and a SageMaker job
        that was running is re-attached to, not launched (and paid for) again.
        """
        unfinished = []
        for status_file in sorted(self.store.root.glob("*/status.json")):
            job_id = status_file.parent.name
            if (_JOB_ID.fullmatch(job_id) and job_id not in self.futures
                    and self.store.read(job_id).get("status") not in FINISHED):
                self.futures[job_id] = self.executor.submit(self.run_job, job_id)
                unfinished.append(job_id)
        return unfinished

    def _trainer(self, subject_class: str) -> Any:
        from lensa_for_all import DreamBoothTrainer, TrainingConfig

        overrides = dict(self.settings.training)
        if self.settings.base_model:
            overrides["base_model"] = self.settings.base_model
        if self.settings.max_train_steps:
            overrides["max_train_steps"] = self.settings.max_train_steps
        return DreamBoothTrainer(TrainingConfig.for_subject(subject_class, "lora", **overrides))

    def public_status(self, job_id: str) -> dict[str, Any]:
        """The status with links instead of file names."""
        status = self.store.read(job_id)
        status["images"] = [f"/avatars/{job_id}/images/{n}.png" for n in range(len(status.get("images") or []))]
        if status.get("contact_sheet"):
            status["contact_sheet"] = f"/avatars/{job_id}/contact-sheet.jpg"
        return status

    def finished_file(self, job_id: str, name: str | None) -> Path:
        status = self.store.read(job_id)
        if status["status"] != "done":
            raise HTTPException(409, f"Avatar request {job_id} is {status['status']}, not done; "
                                     f"poll GET /avatars/{job_id}.")
        if not name:
            raise HTTPException(404, "No such file in this avatar pack.")
        return self.store.folder(job_id) / "avatars" / name


def _rejections(report: Any, names: dict[str, str]) -> list[dict[str, Any]]:
    """The QC report's rejected files, named as the client sent them (not by server paths)."""
    if report is None:
        return []
    return [{"photo": names.get(Path(f.path).name, Path(f.path).name), "reason": f.reason, "code": f.code}
            for f in report.rejected]


def create_app(settings: Settings | None = None, *, make_backend: BackendFactory | None = None) -> FastAPI:
    """The FastAPI app. ``make_backend`` replaces the SageMaker backend (tests: one whose jobs run locally)."""
    service = AvatarService(settings or Settings.from_env(), make_backend)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        resumed = service.resume_unfinished()
        if resumed:
            log.info("resuming %d unfinished avatar request(s)", len(resumed))
        yield
        service.executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="lensa-for-all avatars", lifespan=lifespan)
    app.state.service = service

    @app.post("/avatars", status_code=202)
    def create_avatars(photos: Annotated[list[UploadFile], File(description="4-20 photos of one subject")],
                       subject_class: Annotated[str, Form()] = "person") -> JSONResponse:
        status = service.submit(photos, subject_class)
        return JSONResponse(service.public_status(status["id"]), status_code=202,
                            headers={"Location": f"/avatars/{status['id']}"})

    @app.get("/avatars/{job_id}")
    def get_status(job_id: str) -> dict[str, Any]:
        return service.public_status(job_id)

    @app.get("/avatars/{job_id}/images/{n}.png")
    def get_image(job_id: str, n: int) -> FileResponse:
        images = service.store.read(job_id).get("images") or []
        name = images[n] if 0 <= n < len(images) else None
        return FileResponse(service.finished_file(job_id, name), media_type="image/png")

    @app.get("/avatars/{job_id}/contact-sheet.jpg")
    def get_contact_sheet(job_id: str) -> FileResponse:
        name = service.store.read(job_id).get("contact_sheet")
        return FileResponse(service.finished_file(job_id, name), media_type="image/jpeg")

    return app
