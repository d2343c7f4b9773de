"""Pipeline: photos -> prepared training set -> trained model -> avatar pack, resumable in one run folder.

The pipeline owns no step's logic: it composes :class:`~lensa_for_all.PhotoSet`,
:class:`~lensa_for_all.DreamBoothTrainer` (on a backend), :class:`~lensa_for_all.AvatarModel` and
:class:`~lensa_for_all.PromptGenerator`. :meth:`Pipeline.run` reads as its four stages: plan (check
everything first), photos, train, generate. Each stage is reused when it finished before with the same
inputs (:mod:`lensa_for_all.pipeline.state`) and its outputs are intact
(:mod:`lensa_for_all.pipeline.outputs`, which also shows the run folder's layout).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import (
    ConfigError,
    CostLimitExceeded,
    LensaError,
    PhotoSetError,
    RunStateError,
    TrainingError,
    TrainingJobFailed,
)
from ..redaction import options_for_state, options_from_state
from ..run_lock import lock_folders
from .outputs import (
    AVATARS_DIR,
    CANDIDATES_DIR,
    MODEL_DIR,
    PHOTOS_DIR,
    QC_REPORT,
    damaged_avatars,
    damaged_prepared,
    discard_model,
    model_problems,
    model_source,
    prepared_fingerprint,
    remove_avatars,
    remove_candidates,
    training_outputs,
)
from .progress import RichRunProgress, RunProgress, SilentProgress
from .prompt_source import choose_prompts, listed_prompts, prompt_fingerprint, prompt_from_dict
from .request import RunRequest
from .result import PipelineResult
from .state import RunState, files_fingerprint, fingerprint

if TYPE_CHECKING:
    from ..config import TrainingConfig
    from ..photos import PhotoSet
    from ..prompts import Prompt, PromptGenerator
    from ..training.backend import Backend, TrainingResult
    from ..training.progress import TrainingProgress
    from ..training.trainer import DreamBoothTrainer
    from .plan import RunPlan, SettingNames

__all__ = ["Pipeline", "PipelineResult", "STAGES"]

STAGES = ("photos", "train", "generate")
DEFAULT_RUNS_DIR = "lensa-runs"


class Pipeline:
    """The whole path from a user's photos to an avatar pack, in one resumable run folder.

    Every component can be passed in already configured: ``photos`` (a :class:`PhotoSet`, a folder or a
    list of files), ``trainer`` (a :class:`DreamBoothTrainer` and its :class:`TrainingConfig`), ``backend``
    (a :class:`~lensa_for_all.training.backend.Backend`, ``"local"`` or ``"sagemaker"``) and ``prompts`` (a
    :class:`PromptGenerator` or a list of prompts). ``progress`` is ``True`` (rich, on stderr), ``False``
    or a :class:`~lensa_for_all.pipeline.progress.RunProgress`.
    """

    def __init__(
        self,
        photos: PhotoSet | str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        trainer: DreamBoothTrainer | None = None,
        backend: Backend | str | None = None,
        prompts: PromptGenerator | Sequence[str | Prompt] | None = None,
        run_dir: str | os.PathLike[str] | None = None,
        subject_class: str | None = None,
        min_photos: int = 4,
        subject_kind: str | None = None,
        sagemaker: Mapping[str, Any] | None = None,
        progress: bool | RunProgress = True,
    ) -> None:
        from ..training.trainer import DreamBoothTrainer

        self.photos = photos
        if trainer is None:
            from ..config import TrainingConfig

            cls_name = subject_class or getattr(photos, "subject_class", None) or "person"
            trainer = DreamBoothTrainer(TrainingConfig.for_subject(cls_name, subject_kind=subject_kind))
        self.trainer = trainer
        self.subject_class = subject_class or self.config.subject_class
        # person, pet or object for a class not in lensa_for_all.subjects' table (None: the table decides)
        self.subject_kind = subject_kind
        self._planned: tuple[tuple[Any, ...], RunPlan] | None = None
        if backend is None:
            backend = trainer.backend if trainer.backend is not None else "local"
        if isinstance(backend, str) and backend not in ("local", "sagemaker"):
            raise ConfigError(f"backend must be 'local', 'sagemaker' or a Backend object, not {backend!r}")
        self._backend_spec = backend
        self._backend: Backend | None = None if isinstance(backend, str) else backend
        self.sagemaker_options = dict(sagemaker or {})
        self.prompts = prompts
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.min_photos = min_photos
        self._recorded_prompts: Any = None
        self.progress: RunProgress = (progress if isinstance(progress, RunProgress)
                                      else RichRunProgress() if progress else SilentProgress())

    def __repr__(self) -> str:
        return (f"Pipeline(photos={_describe_photos(self.photos)!r}, method={self.config.method!r}, "
                f"backend={self.backend_name!r}, run_dir={str(self.run_dir) if self.run_dir else None!r})")

    # -- construction ------------------------------------------------------------------------------

    @classmethod
    def from_folder(
        cls,
        photos: str | os.PathLike[str],
        subject_class: str = "person",
        backend: Backend | str = "local",
        method: str = "lora",
        *,
        base_model: str | None = None,
        steps: int | None = None,
        config: TrainingConfig | None = None,
        prompts: PromptGenerator | Sequence[str | Prompt] | None = None,
        run_dir: str | os.PathLike[str] | None = None,
        sagemaker: Mapping[str, Any] | None = None,
        progress: bool | RunProgress = True,
        subject_kind: str | None = None,
        **training: Any,
    ) -> Pipeline:
        """A pipeline for the photos in a folder with the tested preset for ``subject_class``.

        ``base_model``, ``steps`` (``max_train_steps``) and any other :class:`TrainingConfig` field in
        ``training`` override the preset (or ``config``, when given). ``sagemaker`` holds keywords for a
        :class:`SageMakerBackend` built when ``backend="sagemaker"``. ``subject_kind`` (``"person"``,
        ``"pet"`` or ``"object"``) is needed only for a class that :mod:`lensa_for_all.subjects` does not list.
        """
        from ..config import TrainingConfig
        from ..training.trainer import DreamBoothTrainer

        overrides = dict(training)
        if base_model is not None:  # a local folder is made absolute: training runs in another directory
            overrides["base_model"] = str(Path(base_model).resolve()) if Path(base_model).exists() else base_model
        if steps is not None:
            overrides["max_train_steps"] = steps
        if config is None:
            config = TrainingConfig.for_subject(subject_class, method, subject_kind=subject_kind, **overrides)
        else:
            config = config.replace(subject_class=subject_class, method=method, **overrides)
        return cls(photos, trainer=DreamBoothTrainer(config), backend=backend, prompts=prompts, run_dir=run_dir,
                   subject_class=config.subject_class, sagemaker=sagemaker, progress=progress,
                   subject_kind=subject_kind)

    @classmethod
    def load(cls, run_dir: str | os.PathLike[str], *, backend: Backend | None = None,
             progress: bool | RunProgress = True) -> Pipeline:
        """Rebuild the pipeline a run folder's state describes (pass ``backend`` if it was an object)."""
        from ..config import TrainingConfig
        from ..training.trainer import DreamBoothTrainer

        state = RunState.load(run_dir)
        run = state.run
        try:
            config = TrainingConfig.from_dict(run["config"])
            photos = run["photos"]
            backend_name = run["backend"]
        except KeyError as exc:
            raise RunStateError(f"{state.path} lacks {exc}; it was written by an older run. Start the run again.") \
                from exc
        chosen: Backend | str = backend if backend is not None else backend_name
        if backend is None and backend_name not in ("local", "sagemaker"):
            raise RunStateError(f"The run used a custom backend ({backend_name!r}); pass it: "
                                "Pipeline.resume(run_dir, backend=...)")
        sagemaker_options, secrets_given = options_from_state(run.get("sagemaker") or {})
        listed = run.get("prompts")
        prompts = [prompt_from_dict(p) if isinstance(p, dict) else str(p) for p in listed] if listed else None
        pipeline = cls(photos if isinstance(photos, str) else list(photos), trainer=DreamBoothTrainer(config),
                       backend=chosen, prompts=prompts, run_dir=run_dir, subject_class=config.subject_class,
                       subject_kind=run.get("subject_kind"),
                       min_photos=int(run.get("min_photos", 4)), sagemaker=sagemaker_options, progress=progress)
        if secrets_given:
            pipeline.progress.message(
                f"The run was given secret setting(s) {', '.join(secrets_given)}, which are never stored in the run "
                "folder; set them again (HF_TOKEN in the environment for hf_token) if training still needs them.")
        if prompts is None and run.get("prompts_fingerprint") not in (None, "catalogue"):
            # the run used a PromptGenerator object; its prompts are in the generate stage's progress
            pipeline._recorded_prompts = run["prompts_fingerprint"]
        return pipeline

    @classmethod
    def resume(cls, run_dir: str | os.PathLike[str], *, backend: Backend | None = None,
               progress: bool | RunProgress = True) -> PipelineResult:
        """Continue the run in ``run_dir`` after its last finished stage, with the settings it started with.

        Finished stages are reused, an interrupted generation keeps its finished avatars, and a SageMaker
        job that was running is re-attached to instead of being started again.
        """
        pipeline = cls.load(run_dir, backend=backend, progress=progress)
        args = dict(RunState.load(run_dir).run.get("args", {}))
        return pipeline.run(**args)

    # -- accessors ---------------------------------------------------------------------------------

    @property
    def config(self) -> TrainingConfig:
        return self.trainer.config

    @property
    def backend_name(self) -> str:
        if isinstance(self._backend_spec, str):
            return self._backend_spec
        return str(getattr(self._backend_spec, "name", type(self._backend_spec).__name__))

    def backend_for(self, run_name: str | None = None) -> Backend:
        """The backend object (built on first use for ``"local"``/``"sagemaker"``)."""
        if self._backend is None:
            if self._backend_spec == "local":
                from ..training.local import LocalBackend

                self._backend = LocalBackend()
            else:
                from ..backends.sagemaker import SageMakerBackend

                options = dict(self.sagemaker_options)
                if run_name and not options.get("run_name"):
                    options["run_name"] = run_name
                options.setdefault("show_progress", False)  # the pipeline draws the progress
                try:
                    self._backend = SageMakerBackend(**options)
                except TypeError as exc:
                    raise ConfigError(f"invalid SageMaker setting: {exc}") from exc
        return self._backend

    # -- the run: plan, photos, train, generate ---------------------------------------------------------

    def run(self, num_images: int = 40, styles: Sequence[str] | None = None,
            out_dir: str | os.PathLike[str] | None = None, *, seed: int | None = None, magic: bool | str = False,
            batch_size: int | None = None, keep_best: int | None = None, **generation: Any) -> PipelineResult:
        """Prepare the photos, train, and render ``num_images`` avatars in ``styles`` into ``out_dir``.

        ``out_dir`` defaults to ``<run_dir>/avatars``; ``run_dir`` (set on the pipeline) defaults to
        ``<out_dir>/run``, or ``./lensa-runs/<photo folder name>`` without ``out_dir``. ``generation`` takes
        :meth:`AvatarModel.generate` settings (``num_inference_steps``, ``guidance_scale``, ``scheduler``,
        ``width``, ``height``, ``negative_prompt``, ``lora_scale``) and ``device``/``dtype``. Running it
        again reuses every stage whose inputs did not change. Ctrl-C raises ``KeyboardInterrupt`` after
        saving the state; run again (or :meth:`resume`) to continue. Everything is checked first
        (:meth:`plan`), so a bad setting fails in seconds, before any file is written.

        ``keep_best=N`` (needs the ``[likeness]`` extra) renders the ``num_images`` avatars as candidates in the
        run folder and keeps in ``out_dir`` the ``N`` whose faces are most like the subject's photos.
        """
        request = RunRequest.build(num_images, styles, out_dir, seed=seed, magic=magic, batch_size=batch_size,
                                   generation=generation, keep_best=keep_best)
        self._plan(request)
        run_dir, out = self._folders(request)
        # one process per run folder (and output folder): a second run fails at once, naming the first
        with lock_folders(run_dir, out, what="lensa-for-all run", on_takeover=self.progress.message):
            state = self._open_state(run_dir)
            state.set_run(**self._describe_run(), args=request.arguments(out))
            started = time.monotonic()
            try:
                photos = self._photos_stage(state, run_dir)
                train = self._train_stage(state, run_dir, photos)
                avatars = self._generate_stage(state, run_dir, out, train, request)
            finally:
                self.progress.close()
            state.set_run(last_run_s=round(time.monotonic() - started, 3))
        result = PipelineResult.from_stages(run_dir, out, {"photos": photos, "train": train, "generate": avatars},
                                            durations=state.durations(STAGES), backend=self.backend_name)
        if isinstance(self.progress, RichRunProgress):
            self.progress.message(result.summary())
        return result

    def plan(self, num_images: int = 40, styles: Sequence[str] | None = None,
             out_dir: str | os.PathLike[str] | None = None, *, seed: int | None = None, magic: bool | str = False,
             batch_size: int | None = None, keep_best: int | None = None, names: SettingNames | None = None,
             **generation: Any) -> RunPlan:
        """Check everything :meth:`run` with these arguments will need, and say what it will do; write nothing.

        Checks the run folder, photo folder, subject class, styles, base model, device, and for SageMaker
        the region, cost against ``max_cost_usd``, credentials, role, bucket and quota
        (:mod:`lensa_for_all.pipeline.plan`), raising the error the run would hit. ``names`` says how messages
        name the settings (``lensa_for_all.pipeline.plan.CLI_NAMES`` for the command line).
        """
        return self._plan(RunRequest.build(num_images, styles, out_dir, seed=seed, magic=magic,
                                           batch_size=batch_size, generation=generation, keep_best=keep_best), names)

    def _plan(self, request: RunRequest, names: SettingNames | None = None) -> RunPlan:
        """The plan of ``request``, made once: the CLI plans, then runs the same request."""
        from .plan import PYTHON_NAMES, make_plan

        # the same request on the same settings (the trainer's config or the backend may be replaced between calls)
        key = (request, self.config, self._backend_spec if isinstance(self._backend_spec, str)
               else id(self._backend_spec))
        if self._planned is not None and self._planned[0] == key:
            return self._planned[1]
        run_dir, out = self._folders(request)
        plan = make_plan(self, num_images=request.num_images, styles=request.styles, run_dir=run_dir, out_dir=out,
                         names=names or PYTHON_NAMES, keep_best=request.keep_best)
        self._planned = (key, plan)
        return plan

    def _photos_stage(self, state: RunState, run_dir: Path) -> dict[str, Any]:
        """Check the photos and write the prepared square set (and the QC report) into the run folder."""
        inputs, source = self._photo_inputs()
        fp = fingerprint({"files": inputs, "subject_class": self.subject_class, "min_photos": self.min_photos,
                          "resolution": self.config.resolution})
        folder = run_dir / PHOTOS_DIR
        record = self._reusable(state, "photos", fp, lambda _: damaged_prepared(folder),
                                "Prepared photos are missing or damaged ({}): preparing them again.")
        if record is not None:
            return {**record["outputs"], "reused": True}
        self._drop_if_changed(state, "photos", fp,
                              "The photos or their settings changed: checking and preparing them again.")
        started = self._start(state, "photos", fp)
        photoset = self._checked_photos(source, run_dir)
        photoset.prepare(folder, resolution=self.config.resolution)
        outputs = {"dir": PHOTOS_DIR, "count": len(photoset), "rejected": len(photoset.rejected),
                   "prepared": prepared_fingerprint(folder), "sources": [str(p.source) for p in photoset.photos]}
        return self._finish(state, "photos", outputs, started,
                            f"{len(photoset)} used, {len(photoset.rejected)} rejected")

    def _train_stage(self, state: RunState, run_dir: Path, photos: Mapping[str, Any]) -> dict[str, Any]:
        """Train on the prepared photos (or follow the remote job an interrupted run launched)."""
        fp = fingerprint({"photos": photos["prepared"], "config": self.config.to_dict()})
        record = self._reusable(state, "train", fp, lambda r: model_problems(run_dir, r["outputs"]),
                                "The trained model is damaged ({}): training again (from its last checkpoint, "
                                "when there is one).")
        if record is not None:
            return {**record["outputs"], "model": model_source(run_dir, record["outputs"]), "reused": True}
        self._drop_if_changed(state, "train", fp, "The prepared photos or the training settings changed: training "
                              "again.", discard=lambda _: discard_model(run_dir))
        backend = self.backend_for(run_name=_run_name(run_dir, fp))
        started = self._start(state, "train", fp, detail=self.backend_name)
        result = self._training_result(state, backend, run_dir, fp)
        steps = result.metrics.get("steps")
        outputs = self._finish(state, "train", training_outputs(result, run_dir / MODEL_DIR), started,
                               f"{steps} steps" if steps is not None else "")
        return {**outputs, "model": model_source(run_dir, outputs)}

    def _generate_stage(self, state: RunState, run_dir: Path, out: Path, train: Mapping[str, Any],
                        request: RunRequest) -> dict[str, Any]:
        """Render the avatars with the trained model into ``out``, keeping those an interrupted run finished
        (with ``keep_best``: render candidates in the run folder and keep the most alike in ``out``)."""
        from ..generation import AvatarModel
        from ..quiet import library_bars_off
        from .rendering import render_avatars
        from .selection import keep_most_alike

        fp = self._generation_fingerprint(state, request, out)
        record = self._reusable(state, "generate", fp, lambda r: damaged_avatars(out, r),
                                "Avatars missing or damaged ({}): rendering only those again.")
        if record is not None:
            return {**record["outputs"], "reused": True}
        def discard(record: Mapping[str, Any]) -> None:
            remove_avatars(record, out)
            remove_candidates(run_dir)

        self._drop_if_changed(state, "generate", fp, "The model or the generation settings changed: rendering the "
                              "avatars again.", discard=discard)
        started = self._start(state, "generate", fp, total=request.num_images)
        with library_bars_off():  # the run's own progress shows the stage; no loading bars inside it
            model = AvatarModel.load(train["model"], **request.load_options)
        outputs = render_avatars(model, request, state, fp, run_dir / CANDIDATES_DIR if request.keep_best else out,
                                 self.progress, lambda seed: self._prompts_for(model, request, seed))
        if request.keep_best:
            outputs = keep_most_alike(outputs, request.keep_best, self._references(state, run_dir), out, state, fp)
        return self._finish(state, "generate", outputs, started, f"{len(outputs['files'])} avatars")

    # -- what every stage does: reuse, start afresh, start, finish ------------------------------------------

    def _reusable(self, state: RunState, stage: str, fp: str,
                  problems: Callable[[Mapping[str, Any]], list[str] | None], damaged: str) -> dict[str, Any] | None:
        """The stage's record when it finished with these inputs and its outputs are intact, else ``None``.

        ``problems(record)`` lists what is missing or changed (``None``: nothing there to reuse); when it
        lists something, ``damaged`` (with ``{}`` for the first three) tells the user why the stage runs again.
        """
        record = state.stage(stage)
        if record is None or not state.is_done(stage, fp):
            return None
        found = problems(record)
        if found == []:
            self.progress.stage_finished(stage, seconds=float(record.get("duration_s", 0.0)), reused=True)
            return record
        if found:
            self.progress.message(damaged.format(", ".join(found[:3])))
        return None

    def _drop_if_changed(self, state: RunState, stage: str, fp: str, message: str,
                         discard: Callable[[Mapping[str, Any]], None] | None = None) -> None:
        """Forget a stage that ran with other inputs (``discard`` removes what it left), saying why."""
        record = state.stage(stage)
        if record is None or record.get("fingerprint") == fp:
            return
        self.progress.message(message)
        if discard is not None:
            discard(record)
        state.forget(stage)

    def _start(self, state: RunState, stage: str, fp: str, *, total: int | None = None, detail: str = "") -> float:
        """Mark the stage started (in the state and on the progress display); its start time."""
        self.progress.stage_started(stage, total=total, detail=detail)
        started = time.monotonic()
        state.start(stage, fp)
        return started

    def _finish(self, state: RunState, stage: str, outputs: Mapping[str, Any], started: float,
                detail: str) -> dict[str, Any]:
        """Record the stage's outputs and duration; the outputs, marked not reused."""
        seconds = time.monotonic() - started
        state.finish(stage, outputs, seconds)
        self.progress.stage_finished(stage, seconds=seconds, reused=False, detail=detail)
        return {**outputs, "reused": False}

    # -- run folder ----------------------------------------------------------------------------------

    def _folders(self, request: RunRequest) -> tuple[Path, Path]:
        """The run folder (absolute: the training entry point runs in another directory) and the avatar folder."""
        if self.run_dir is not None:
            run_dir = self.run_dir.resolve()
        elif request.out_dir is not None:
            run_dir = (request.out_dir / "run").resolve()
        else:
            name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(_describe_photos(self.photos)).name).strip("-") or "run"
            run_dir = (Path(DEFAULT_RUNS_DIR) / name).resolve()
        return run_dir, request.out_dir if request.out_dir is not None else run_dir / AVATARS_DIR

    def _open_state(self, run_dir: Path) -> RunState:
        if RunState.exists(run_dir):
            return RunState.load(run_dir)
        leftovers = [name for name in (PHOTOS_DIR, MODEL_DIR, MODEL_DIR + ".work") if (run_dir / name).exists()]
        if leftovers:
            raise RunStateError(f"{run_dir} holds {', '.join(leftovers)} but no run state, so they may belong to "
                                "something else. Choose another run folder (--run-dir) or remove them.")
        state = RunState.load(run_dir, create=True)
        state.save()
        return state

    def _describe_run(self) -> dict[str, Any]:
        """What :meth:`load` needs to rebuild this pipeline (never a secret: see ``options_for_state``)."""
        photos: Any = self.photos
        if hasattr(photos, "photos"):  # a PhotoSet: resume rebuilds it from the accepted files
            photos = [str(Path(p.source).resolve()) for p in photos.photos]
        elif isinstance(photos, (str, os.PathLike)):
            photos = str(Path(photos).resolve())
        else:
            photos = [str(Path(p).resolve()) for p in photos]
        return {"photos": photos, "subject_class": self.subject_class, "subject_kind": self.subject_kind,
                "min_photos": self.min_photos,
                "config": self.config.to_dict(), "backend": self.backend_name,
                "sagemaker": options_for_state(self.sagemaker_options) or None,
                "prompts": listed_prompts(self.prompts),
                "prompts_fingerprint": prompt_fingerprint(self.prompts, self._recorded_prompts)}

    # -- the stages' mechanics -----------------------------------------------------------------------------

    def _photo_inputs(self) -> tuple[list[tuple[str, str]], Any]:
        """(name, sha256) of the input photos, and how to build the PhotoSet."""
        photos: Any = self.photos
        if hasattr(photos, "photos"):
            return sorted((p.source.name, p.sha256) for p in photos.photos), photos
        if isinstance(photos, (str, os.PathLike)):
            folder = Path(photos)
            if not folder.is_dir():
                raise PhotoSetError(f"Photo folder {folder} does not exist or is not a folder; pass the folder "
                                    "that holds the photos.")
            files = [p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")]
            return files_fingerprint(files), folder
        files = [Path(p) for p in photos]
        return files_fingerprint(files), files

    def _checked_photos(self, source: Any, run_dir: Path) -> PhotoSet:
        """The PhotoSet of ``source``, its QC report written to the run folder (also when too few photos pass)."""
        from ..atomic import write_text_atomic
        from ..errors import TooFewPhotosError
        from ..photos import PhotoSet

        options: dict[str, Any] = {"subject_class": self.subject_class, "min_photos": self.min_photos,
                   "subject_kind": self.subject_kind}
        try:
            if isinstance(source, PhotoSet):
                photoset = source
            elif isinstance(source, Path):
                photoset = PhotoSet.from_folder(source, **options)
            else:
                photoset = PhotoSet.from_files(source, **options)
        except TooFewPhotosError as exc:
            if exc.report is not None:  # keep the reasons where the user will look
                write_text_atomic(run_dir / QC_REPORT, exc.report.to_json() + "\n")  # type: ignore[attr-defined]
            raise
        write_text_atomic(run_dir / QC_REPORT, photoset.report().to_json() + "\n")
        return photoset

    def _training_result(self, state: RunState, backend: Backend, run_dir: Path, fp: str) -> TrainingResult:
        """Follow the job an interrupted run launched, else train; a remote job's name is recorded at launch."""
        job = state.progress("train", fp).get("job_name")
        can_attach = callable(getattr(backend, "attach", None))
        result = self._reattach(state, backend, job, run_dir / MODEL_DIR) if job and can_attach else None
        if result is not None:
            return result
        # passed only to backends that can re-attach (a trainer subclass may predate the keyword)
        record_job: dict[str, Any] = ({"on_job_started": lambda name: state.update_progress("train", job_name=name)}
                                      if can_attach else {})
        return self.trainer.train(run_dir / PHOTOS_DIR, backend=backend, output_dir=run_dir / MODEL_DIR,
                                  progress=self._training_progress, **record_job)

    def _training_progress(self, p: TrainingProgress) -> None:
        info = p.stage if p.loss is None else f"{p.stage} loss {p.loss:.4f}"
        self.progress.stage_progress("train", p.step, p.total_steps, info=info)

    def _reattach(self, state: RunState, backend: Any, job: str, model_dir: Path) -> TrainingResult | None:
        """Follow the job an interrupted run launched; ``None`` when it was stopped and must be relaunched."""
        self.progress.message(f"Re-attaching to training job {job} (started by an earlier run).")
        try:
            return backend.attach(job, model_dir, progress=self._training_progress)
        except (TrainingJobFailed, CostLimitExceeded):
            state.update_progress("train", job_name=None, last_job=job)  # next run launches a new job
            raise
        except TrainingError:
            state.update_progress("train", job_name=None, last_job=job)
            self.progress.message(f"Job {job} was stopped before it finished; starting a new job that resumes from "
                                  "its checkpoints.")
            return None
        except LensaError as exc:
            if "No training job named" not in str(exc):
                raise
            state.update_progress("train", job_name=None, last_job=job)
            self.progress.message(f"Job {job} cannot be found ({exc}); starting a new one.")
            return None

    def _generation_fingerprint(self, state: RunState, request: RunRequest, out: Path) -> str:
        """The generate stage's inputs: the trained model (its run), the prompts and the run's arguments."""
        train_record = state.stage("train") or {}
        return fingerprint({"model": train_record.get("fingerprint"), "trained_at": train_record.get("finished_at"),
                            "prompts": prompt_fingerprint(self.prompts, self._recorded_prompts),
                            **request.arguments(out)})

    def _references(self, state: RunState, run_dir: Path) -> Any:
        """The subject's photos to compare faces with: the accepted originals (full size, better faces than the
        training crops), or the prepared photos when the originals are gone."""
        sources = ((state.stage("photos") or {}).get("outputs") or {}).get("sources") or []
        present = [Path(s) for s in sources if Path(s).is_file()]
        return present or run_dir / PHOTOS_DIR

    def _prompts_for(self, model: Any, request: RunRequest, seed: int) -> list[Prompt]:
        return choose_prompts(self.prompts, model, request.num_images, styles=request.styles, magic=request.magic,
                              seed=seed, subject_kind=self.subject_kind)


# -- helpers ----------------------------------------------------------------------------------------


def _describe_photos(photos: Any) -> str:
    if hasattr(photos, "root") and getattr(photos, "root", None) is not None:
        return str(photos.root)
    if isinstance(photos, (str, os.PathLike)):
        return str(photos)
    if hasattr(photos, "photos"):
        return "photoset"
    return "photos"



def _run_name(run_dir: Path, fp: str) -> str:
    """A SageMaker run name per run folder and training inputs, so changed inputs never resume old checkpoints."""
    label = re.sub(r"[^A-Za-z0-9-]+", "-", run_dir.resolve().parent.name if run_dir.name == "run"
                   else run_dir.resolve().name).strip("-")[:40] or "run"
    return f"{label}-{fp[:10]}"
