"""Pipeline: photos -> prepared training set -> trained model -> avatar pack, resumable in one run folder.

The pipeline owns no step's logic: it composes :class:`~lensa_for_all.PhotoSet`,
:class:`~lensa_for_all.DreamBoothTrainer` (on a backend), :class:`~lensa_for_all.AvatarModel` and
:class:`~lensa_for_all.PromptGenerator`, and keeps the run folder and its state file
(:mod:`lensa_for_all.pipeline.state`) so that running again continues after the last finished stage.

Run folder layout::

    run_dir/lensa_run.json   state: finished stages, their input fingerprints, outputs, durations
    run_dir/qc_report.json   the photo check
    run_dir/photos/          prepared square PNGs + manifest.json
    run_dir/model/           the trained model (LoRA or full); run_dir/model.work: checkpoints, log
    out_dir/                 the avatars, avatars.json and contact_sheet.jpg (default run_dir/avatars)
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from ..errors import (
    ConfigError,
    CostLimitExceeded,
    LensaError,
    RunStateError,
    TrainingError,
    TrainingJobFailed,
)
from ..redaction import options_for_state, options_from_state
from ..run_lock import lock_folders
from .progress import RichRunProgress, RunProgress, SilentProgress
from .state import RunState, damaged_files, file_check, files_fingerprint, fingerprint, folder_checks

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
PHOTOS_DIR = "photos"
MODEL_DIR = "model"
AVATARS_DIR = "avatars"
QC_REPORT = "qc_report.json"
DEFAULT_RUNS_DIR = "lensa-runs"

# AvatarModel.load keywords and AvatarModel.generate keywords that Pipeline.run passes through.
_LOAD_KEYS = ("device", "dtype")
_RENDER_KEYS = ("num_inference_steps", "guidance_scale", "scheduler", "width", "height", "negative_prompt",
                "lora_scale")
_GENERATION_KEYS = frozenset((*_LOAD_KEYS, *_RENDER_KEYS, "batch_size"))
_MAX_SEED = 2**32



@attrs.frozen
class PipelineResult:
    """What a run produced: where the avatars are, the model, cost and how long each stage took.

    ``durations`` holds the seconds each stage took when it ran (for a reused stage, its earlier run);
    ``reused`` names the stages taken from an earlier run of the same inputs.
    """

    run_dir: Path
    out_dir: Path
    avatars: tuple[Path, ...]
    contact_sheet: Path | None
    model: str
    num_photos: int
    num_rejected: int
    durations: Mapping[str, float] = attrs.field(factory=dict)
    reused: tuple[str, ...] = ()
    backend: str = "local"
    job_name: str | None = None
    cost_usd: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (the ``--json`` output of ``lensa-for-all run``)."""
        return {
            "run_dir": str(self.run_dir), "out_dir": str(self.out_dir), "avatars": [str(p) for p in self.avatars],
            "contact_sheet": str(self.contact_sheet) if self.contact_sheet else None, "model": self.model,
            "num_photos": self.num_photos, "num_rejected": self.num_rejected, "durations": dict(self.durations),
            "reused": list(self.reused), "backend": self.backend, "job_name": self.job_name,
            "cost_usd": self.cost_usd,
        }

    def summary(self) -> str:
        """A few lines for people: where everything is, how long it took, what it cost."""
        from .progress import STAGE_LABELS, _duration

        sheet = f" (contact sheet: {self.contact_sheet})" if self.contact_sheet else ""
        lines = [f"Avatars: {len(self.avatars)} in {self.out_dir}{sheet}",
                 f"Model:   {self.model}",
                 f"Photos:  {self.num_photos} used, {self.num_rejected} rejected "
                 f"(report: {self.run_dir / QC_REPORT})"]
        times = [f"{STAGE_LABELS.get(s, s)} {_duration(sec)}" + (" (reused)" if s in self.reused else "")
                 for s, sec in self.durations.items()]
        lines.append("Time:    " + ", ".join(times))
        if self.cost_usd is not None:
            lines.append(f"Cost:    ${self.cost_usd:.2f} on SageMaker (job {self.job_name})")
        elif self.backend == "sagemaker" and self.job_name:
            lines.append(f"Cost:    see the SageMaker console (job {self.job_name})")
        return "\n".join(lines)


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
        self._planned: tuple[str, RunPlan] | None = None
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
        prompts = [_prompt_from_dict(p) if isinstance(p, dict) else str(p) for p in listed] if listed else None
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

    # -- the run -----------------------------------------------------------------------------------

    def run(
        self,
        num_images: int = 40,
        styles: Sequence[str] | None = None,
        out_dir: str | os.PathLike[str] | None = None,
        *,
        seed: int | None = None,
        magic: bool | str = False,
        batch_size: int | None = None,
        **generation: Any,
    ) -> PipelineResult:
        """Prepare the photos, train, and render ``num_images`` avatars in ``styles`` into ``out_dir``.

        ``out_dir`` defaults to ``<run_dir>/avatars``; ``run_dir`` (set on the pipeline) defaults to
        ``<out_dir>/run``, or ``./lensa-runs/<photo folder name>`` without ``out_dir``. ``generation`` takes
        :meth:`AvatarModel.generate` settings (``num_inference_steps``, ``guidance_scale``, ``scheduler``,
        ``width``, ``height``, ``negative_prompt``, ``lora_scale``) and ``device``/``dtype``. Running it
        again reuses every stage whose inputs did not change. Ctrl-C raises ``KeyboardInterrupt`` after
        saving the state; run again (or :meth:`resume`) to continue. Everything is checked first
        (:meth:`plan`), so a bad setting fails in seconds, before any file is written.
        """
        self.plan(num_images, styles, out_dir, seed=seed, magic=magic, batch_size=batch_size, **generation)
        run_dir = self._run_dir(out_dir)
        out = Path(out_dir) if out_dir is not None else run_dir / AVATARS_DIR
        if batch_size is not None:
            generation["batch_size"] = batch_size
        args = {"num_images": num_images, "styles": list(styles) if styles else None, "out_dir": str(out.resolve()),
                "seed": seed, "magic": magic, **generation}
        # one process per run folder (and output folder): a second run fails at once, naming the first
        with lock_folders(run_dir, out, what="lensa-for-all run", on_takeover=self.progress.message):
            state = self._open_state(run_dir)
            state.set_run(**self._describe_run(), args=args)
            started = time.monotonic()
            try:
                photos = self._photos_stage(state, run_dir)
                train = self._train_stage(state, run_dir, photos)
                gen = self._generate_stage(state, out, train, args)
            finally:
                self.progress.close()
            state.set_run(last_run_s=round(time.monotonic() - started, 3))
        stages = {name: state.stage(name) or {} for name in STAGES}
        reused = tuple(name for name, was_reused in (("photos", photos["reused"]), ("train", train["reused"]),
                                                     ("generate", gen["reused"])) if was_reused)
        result = PipelineResult(
            run_dir=run_dir, out_dir=out, avatars=tuple(out / f for f in gen["files"]),
            contact_sheet=out / gen["contact_sheet"] if gen.get("contact_sheet") else None,
            model=train["model"], num_photos=int(photos["count"]), num_rejected=int(photos["rejected"]),
            durations={name: float(rec.get("duration_s", 0.0)) for name, rec in stages.items()}, reused=reused,
            backend=self.backend_name, job_name=train.get("job_name"), cost_usd=train.get("cost_usd"),
        )
        if isinstance(self.progress, RichRunProgress):
            self.progress.message(result.summary())
        return result

    def plan(
        self,
        num_images: int = 40,
        styles: Sequence[str] | None = None,
        out_dir: str | os.PathLike[str] | None = None,
        *,
        seed: int | None = None,
        magic: bool | str = False,
        batch_size: int | None = None,
        names: SettingNames | None = None,
        **generation: Any,
    ) -> RunPlan:
        """Check everything :meth:`run` with these arguments will need, and say what it will do; write nothing.

        Checks the run folder, photo folder, subject class, styles, base model, device, and for SageMaker
        the region, cost against ``max_cost_usd``, credentials, role, bucket and quota
        (:mod:`lensa_for_all.pipeline.plan`), raising the error the run would hit. ``names`` says how messages
        name the settings (``lensa_for_all.pipeline.plan.CLI_NAMES`` for the command line).
        """
        from .plan import PYTHON_NAMES, make_plan

        unknown = sorted(set(generation) - _GENERATION_KEYS)
        if unknown:
            raise ConfigError(f"Pipeline.run got unknown setting(s) {unknown}; generation settings are "
                              f"{', '.join(sorted(_GENERATION_KEYS))}")
        if num_images < 1:
            raise ConfigError(f"num_images must be at least 1, not {num_images}")
        if seed is not None and not 0 <= seed < _MAX_SEED:
            raise ConfigError(f"seed must be between 0 and {_MAX_SEED - 1}, not {seed}")
        key = repr((num_images, list(styles or []), str(out_dir), seed, magic, batch_size, sorted(generation.items())))
        if self._planned is not None and self._planned[0] == key:
            return self._planned[1]  # checked moments ago (the CLI plans, then runs)
        run_dir = self._run_dir(out_dir)
        out = Path(out_dir) if out_dir is not None else run_dir / AVATARS_DIR
        plan = make_plan(self, num_images=num_images, styles=styles, run_dir=run_dir, out_dir=out,
                         names=names or PYTHON_NAMES)
        self._planned = (key, plan)
        return plan

    # -- run folder --------------------------------------------------------------------------------

    def _run_dir(self, out_dir: str | os.PathLike[str] | None) -> Path:
        """Absolute, since the training entry point runs in another working directory."""
        if self.run_dir is not None:
            return self.run_dir.resolve()
        if out_dir is not None:
            return (Path(out_dir) / "run").resolve()
        label = _describe_photos(self.photos)
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(label).name).strip("-") or "run"
        return (Path(DEFAULT_RUNS_DIR) / name).resolve()

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
        photos: Any = self.photos
        if hasattr(photos, "photos"):  # a PhotoSet: resume rebuilds it from the accepted files
            photos = [str(Path(p.source).resolve()) for p in photos.photos]
        elif isinstance(photos, (str, os.PathLike)):
            photos = str(Path(photos).resolve())
        else:
            photos = [str(Path(p).resolve()) for p in photos]
        prompts = None
        if self.prompts is not None and not hasattr(self.prompts, "generate"):
            prompts = [p.to_dict() if hasattr(p, "to_dict") else str(p) for p in self.prompts]
        return {"photos": photos, "subject_class": self.subject_class, "subject_kind": self.subject_kind,
                "min_photos": self.min_photos,
                "config": self.config.to_dict(), "backend": self.backend_name,
                "sagemaker": options_for_state(self.sagemaker_options) or None, "prompts": prompts,
                "prompts_fingerprint": self._prompt_fingerprint()}

    # -- stage 1: photos ---------------------------------------------------------------------------

    def _photo_inputs(self) -> tuple[list[tuple[str, str]], Any]:
        """(name, sha256) of the input photos, and how to build the PhotoSet."""
        photos: Any = self.photos
        if hasattr(photos, "photos"):
            return sorted((p.source.name, p.sha256) for p in photos.photos), photos
        if isinstance(photos, (str, os.PathLike)):
            folder = Path(photos)
            if not folder.is_dir():
                from ..errors import PhotoSetError

                raise PhotoSetError(f"Photo folder {folder} does not exist or is not a folder; pass the folder "
                                    "that holds the photos.")
            files = [p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")]
            return files_fingerprint(files), folder
        files = [Path(p) for p in photos]
        return files_fingerprint(files), files

    def _photos_stage(self, state: RunState, run_dir: Path) -> dict[str, Any]:
        from ..photos import PhotoSet

        inputs, source = self._photo_inputs()
        fp = fingerprint({"files": inputs, "subject_class": self.subject_class, "min_photos": self.min_photos,
                          "resolution": self.config.resolution})
        out = run_dir / PHOTOS_DIR
        record = state.stage("photos")
        damaged = _damaged_prepared(out) if state.is_done("photos", fp) and record else None
        if damaged == []:
            self._reused("photos", record)  # type: ignore[arg-type]
            return {**record["outputs"], "reused": True}  # type: ignore[index]
        if damaged:
            self.progress.message(f"Prepared photos are missing or damaged ({', '.join(damaged[:3])}): "
                                  "preparing them again.")
        if record is not None and record.get("fingerprint") != fp:
            self.progress.message("The photos or their settings changed: checking and preparing them again.")
        self.progress.stage_started("photos")
        t0 = time.monotonic()
        state.start("photos", fp)
        from ..atomic import write_text_atomic
        from ..errors import TooFewPhotosError

        try:
            if isinstance(source, PhotoSet):
                photoset = source
            elif isinstance(source, Path):
                photoset = PhotoSet.from_folder(source, subject_class=self.subject_class, min_photos=self.min_photos,
                                                subject_kind=self.subject_kind)
            else:
                photoset = PhotoSet.from_files(source, subject_class=self.subject_class, min_photos=self.min_photos,
                                               subject_kind=self.subject_kind)
        except TooFewPhotosError as exc:
            if exc.report is not None:  # keep the reasons where the user will look
                write_text_atomic(run_dir / QC_REPORT, exc.report.to_json() + "\n")  # type: ignore[attr-defined]
            raise

        write_text_atomic(run_dir / QC_REPORT, photoset.report().to_json() + "\n")
        photoset.prepare(out, resolution=self.config.resolution)
        outputs = {"dir": PHOTOS_DIR, "count": len(photoset), "rejected": len(photoset.rejected),
                   "prepared": _prepared_fingerprint(out), "sources": [str(p.source) for p in photoset.photos]}
        seconds = time.monotonic() - t0
        state.finish("photos", outputs, seconds)
        self.progress.stage_finished("photos", seconds=seconds, reused=False,
                                     detail=f"{len(photoset)} used, {len(photoset.rejected)} rejected")
        return {**outputs, "reused": False}

    # -- stage 2: train ----------------------------------------------------------------------------

    def _train_stage(self, state: RunState, run_dir: Path, photos: Mapping[str, Any]) -> dict[str, Any]:
        fp = fingerprint({"photos": photos["prepared"], "config": self.config.to_dict()})
        model_dir = run_dir / MODEL_DIR
        record = state.stage("train")
        damaged_model = _damaged_model(run_dir, record["outputs"]) if state.is_done("train", fp) and record else []
        if damaged_model:
            self.progress.message(f"The trained model is damaged ({', '.join(damaged_model[:3])}): training again "
                                  "(from its last checkpoint, when there is one).")
        elif state.is_done("train", fp) and record and _model_present(run_dir, record["outputs"]):
            self._reused("train", record)
            return {**record["outputs"], "model": _model_source(run_dir, record["outputs"]), "reused": True}
        if record is not None and record.get("fingerprint") != fp:
            self.progress.message("The prepared photos or the training settings changed: training again.")
            self._discard_model(run_dir)
            state.forget("train")
        backend = self.backend_for(run_name=_run_name(run_dir, fp))
        self.progress.stage_started("train", detail=self.backend_name)
        t0 = time.monotonic()
        state.start("train", fp)
        job = state.progress("train", fp).get("job_name")

        def on_progress(p: TrainingProgress) -> None:
            info = p.stage if p.loss is None else f"{p.stage} loss {p.loss:.4f}"
            self.progress.stage_progress("train", p.step, p.total_steps, info=info)

        result: TrainingResult | None = None
        can_attach = callable(getattr(backend, "attach", None))
        if job and can_attach:
            result = self._reattach(state, backend, job, model_dir, on_progress)
        if result is None:
            # a job's name is recorded the moment it exists, so a later run re-attaches instead of paying twice;
            # passed only to backends that can re-attach (a trainer subclass may predate the keyword)
            record_job: dict[str, Any] = ({"on_job_started": lambda name: state.update_progress("train", job_name=name)}
                                          if can_attach else {})
            result = self.trainer.train(run_dir / PHOTOS_DIR, backend=backend, output_dir=model_dir,
                                        progress=on_progress, **record_job)
        outputs = {"dir": MODEL_DIR if result.output_dir is not None else None,
                   "checks": folder_checks(model_dir) if result.output_dir is not None else {},
                   "artifact_uri": result.artifact_uri, "job_name": result.job_name, "cost_usd": result.cost_usd,
                   "backend": result.backend, "metrics": dict(result.metrics),
                   "log": str(result.log_path) if result.log_path else None}
        seconds = time.monotonic() - t0
        state.finish("train", outputs, seconds)
        steps = result.metrics.get("steps")
        self.progress.stage_finished("train", seconds=seconds, reused=False,
                                     detail=f"{steps} steps" if steps is not None else "")
        return {**outputs, "model": _model_source(run_dir, outputs), "reused": False}

    def _reattach(self, state: RunState, backend: Any, job: str, model_dir: Path,
                  on_progress: Callable[[TrainingProgress], None]) -> TrainingResult | None:
        """Follow the job an interrupted run launched; ``None`` when it was stopped and must be relaunched."""
        self.progress.message(f"Re-attaching to training job {job} (started by an earlier run).")
        try:
            return backend.attach(job, model_dir, progress=on_progress)
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

    def _discard_model(self, run_dir: Path) -> None:
        """Remove a stale model and its checkpoints (both inside the run folder) so they are not resumed."""
        for name in (MODEL_DIR, MODEL_DIR + ".work"):
            path = run_dir / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)

    # -- stage 3: generate -------------------------------------------------------------------------

    def _prompt_fingerprint(self) -> Any:
        prompts: Any = self.prompts
        if prompts is None:
            return self._recorded_prompts if self._recorded_prompts is not None else "catalogue"
        if hasattr(prompts, "generate"):
            return {"token": prompts.token, "subject_class": prompts.subject_class,
                    "styles": [s.name for s in prompts.styles()], "magic": repr(prompts.default_magic)}
        return [p.to_dict() if hasattr(p, "to_dict") else str(p) for p in prompts]

    def _generate_stage(self, state: RunState, out: Path, train: Mapping[str, Any],
                        args: Mapping[str, Any]) -> dict[str, Any]:
        from ..generation import AvatarModel, AvatarPack
        from ..generation.pack import Avatar, PackWriter

        train_record = state.stage("train") or {}
        fp = fingerprint({"model": train_record.get("fingerprint"), "trained_at": train_record.get("finished_at"),
                          "prompts": self._prompt_fingerprint(), **args})
        record = state.stage("generate")
        damaged_avatars = _damaged_avatars(out, record) if state.is_done("generate", fp) and record else None
        if damaged_avatars == []:
            self._reused("generate", record)  # type: ignore[arg-type]
            return {**record["outputs"], "reused": True}  # type: ignore[index]
        if damaged_avatars:
            self.progress.message(f"Avatars missing or damaged ({', '.join(damaged_avatars[:3])}): rendering "
                                  "only those again.")
        if record is not None and record.get("fingerprint") != fp:
            self.progress.message("The model or the generation settings changed: rendering the avatars again.")
            _remove_avatars(record, out)
            state.forget("generate")
        num_images = int(args["num_images"])
        self.progress.stage_started("generate", total=num_images)
        t0 = time.monotonic()
        state.start("generate", fp)
        earlier = state.progress("generate", fp)
        model = AvatarModel.load(train["model"], **{k: args[k] for k in _LOAD_KEYS if args.get(k) is not None})
        render = {k: args[k] for k in _RENDER_KEYS if args.get(k) is not None}
        seed = earlier.get("seed")
        if seed is None:
            seed = args["seed"] if args.get("seed") is not None else secrets.randbelow(2**31)
        if earlier.get("prompts"):
            prompts = [_prompt_from_dict(d) for d in earlier["prompts"]]
        else:
            prompts = self._make_prompts(model, num_images, args, seed)
        checks: dict[str, Any] = dict(earlier.get("checks") or {})
        done = _intact_avatars(out, earlier.get("files") or {}, checks)
        writer = PackWriter(out)
        for index in range(num_images):  # PNGs an interrupted run wrote but had not recorded yet
            adopted = writer.adopt(index, (seed + index) % _MAX_SEED) if index not in done else None
            if adopted is not None:
                done[index] = adopted.name
                checks[adopted.name] = file_check(adopted)
        state.update_progress("generate", seed=seed, prompts=[p.to_dict() for p in prompts],
                              files={str(k): v for k, v in done.items()},
                              checks={v: checks[v] for v in done.values() if v in checks})
        if done:
            self.progress.message(f"Keeping the {len(done)} avatars an earlier run finished.")
        self.progress.stage_progress("generate", len(done), num_images)
        for start, stop in _missing_runs(num_images, done):
            run_prompts = [prompts[i % len(prompts)] for i in range(start, stop)]
            avatars = model.iter_generate(run_prompts, stop - start, seed=(seed + start) % _MAX_SEED,
                                          batch_size=args.get("batch_size"), **render)
            for avatar in avatars:
                # batches group jobs by their settings, so avatars may finish out of order; image i has seed+i
                index = (avatar.seed - seed) % _MAX_SEED
                path = writer.add(avatar, index)
                done[index] = path.name
                checks[path.name] = file_check(path)
                state.update_progress("generate", files={str(k): v for k, v in done.items()},
                                      checks={v: checks[v] for v in done.values() if v in checks})
                self.progress.stage_progress("generate", len(done), num_images)
        files = [done[i] for i in range(num_images)]
        pack = AvatarPack([Avatar.from_png(out / f) for f in files])
        sheet = writer.finish(pack)
        outputs = {"out_dir": str(out.resolve()), "files": files, "contact_sheet": sheet.name if sheet else None,
                   "seed": seed, "checks": {f: checks[f] for f in files if f in checks}}
        seconds = time.monotonic() - t0
        state.finish("generate", outputs, seconds)
        self.progress.stage_finished("generate", seconds=seconds, reused=False, detail=f"{len(files)} avatars")
        return {**outputs, "reused": False}

    def _make_prompts(self, model: Any, num_images: int, args: Mapping[str, Any], seed: int) -> list[Prompt]:
        from ..prompts import Prompt

        styles = args.get("styles") or None
        magic = args.get("magic", False)
        prompts: Any = self.prompts
        if prompts is None:
            generator = model.prompt_generator(**({"subject_kind": self.subject_kind} if self.subject_kind else {}))
        elif hasattr(prompts, "generate"):
            generator = prompts
            if not generator.has_tokenizer and getattr(model.runner, "tokenizer", None) is not None:
                generator.use_tokenizer(model.runner.tokenizer)
        else:
            if styles:
                raise ConfigError("styles apply to the style catalogue; they cannot be combined with your own prompts")
            listed = [p if isinstance(p, Prompt) else Prompt(str(p)) for p in prompts]
            if not listed:
                raise ConfigError("No prompts given.")
            return listed
        return list(generator.generate(num_images, styles=styles, magic=magic, seed=seed))

    # -- reporting ---------------------------------------------------------------------------------

    def _reused(self, stage: str, record: Mapping[str, Any]) -> None:
        self.progress.stage_finished(stage, seconds=float(record.get("duration_s", 0.0)), reused=True)


# -- helpers ----------------------------------------------------------------------------------------


def _describe_photos(photos: Any) -> str:
    if hasattr(photos, "root") and getattr(photos, "root", None) is not None:
        return str(photos.root)
    if isinstance(photos, (str, os.PathLike)):
        return str(photos)
    if hasattr(photos, "photos"):
        return "photoset"
    return "photos"


def _prepared_fingerprint(folder: Path) -> str:
    """What training sees: the prepared PNGs' bytes (manifest names and hashes) and their settings."""
    import json

    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    return fingerprint({"settings": manifest.get("settings"), "subject_class": manifest.get("subject_class"),
                        "photos": sorted((e["file"], e.get("output_sha256")) for e in manifest.get("photos", []))})


def _run_name(run_dir: Path, fp: str) -> str:
    """A SageMaker run name per run folder and training inputs, so changed inputs never resume old checkpoints."""
    label = re.sub(r"[^A-Za-z0-9-]+", "-", run_dir.resolve().parent.name if run_dir.name == "run"
                   else run_dir.resolve().name).strip("-")[:40] or "run"
    return f"{label}-{fp[:10]}"


def _damaged_prepared(folder: Path) -> list[str]:
    """Prepared photos that are missing or differ from their manifest (``["manifest.json"]`` without one)."""
    import json

    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        entries = [(e["file"], e.get("output_sha256")) for e in manifest["photos"]]
    except (OSError, ValueError, KeyError, TypeError):
        return ["manifest.json"]
    bad = []
    for name, digest in entries:
        path = folder / name
        if not path.is_file():
            bad.append(f"{name} (missing)")
        elif digest and files_fingerprint([path])[0][1] != digest:
            bad.append(f"{name} (contents changed)")
    return bad


def _damaged_model(run_dir: Path, outputs: Mapping[str, Any]) -> list[str]:
    """Model files recorded by the train stage that are missing or changed (none recorded: nothing to check)."""
    checks = outputs.get("checks")
    if not outputs.get("dir") or not isinstance(checks, dict) or not checks:
        return []
    return damaged_files(run_dir / outputs["dir"], checks)


def _damaged_avatars(out: Path, record: Mapping[str, Any]) -> list[str]:
    """Avatars of a finished generation that are missing or changed since they were recorded."""
    outputs = record.get("outputs") or {}
    files = [f for f in outputs.get("files") or [] if isinstance(f, str)]
    checks = outputs.get("checks") or {}
    bad = [f"{f} (missing)" for f in files if not (out / f).is_file()]
    present = {f: checks[f] for f in files if f in checks and (out / f).is_file()}
    return bad + damaged_files(out, present)


def _intact_avatars(out: Path, files: Mapping[str, str], checks: Mapping[str, Any]) -> dict[int, str]:
    """The recorded avatars that are still intact, by index; damaged ones are deleted (they are ours, by name)."""
    intact: dict[int, str] = {}
    for key, name in files.items():
        path = out / name
        if not path.is_file():
            continue
        if name in checks and damaged_files(out, {name: checks[name]}):
            if re.fullmatch(r"[\w.+-]+\.png", name):
                path.unlink()
            continue
        intact[int(key)] = name
    return intact


def _model_present(run_dir: Path, outputs: Mapping[str, Any]) -> bool:
    if outputs.get("dir"):
        folder = run_dir / outputs["dir"]
        return folder.is_dir() and any(folder.iterdir())
    return bool(outputs.get("artifact_uri"))


def _model_source(run_dir: Path, outputs: Mapping[str, Any]) -> str:
    if outputs.get("dir"):
        return str(run_dir / outputs["dir"])
    uri = outputs.get("artifact_uri")
    if not uri:
        raise RunStateError(f"The training stage in {run_dir} recorded no model; run again to retrain.")
    return str(uri)


def _prompt_from_dict(data: Mapping[str, Any]) -> Prompt:
    from ..prompts import Prompt

    return Prompt(data["text"], data.get("negative", ""), data.get("style"), data.get("settings") or {})


def _missing_runs(n: int, done: Mapping[int, str]) -> Iterator[tuple[int, int]]:
    """Contiguous [start, stop) ranges of image indices not finished yet."""
    start: int | None = None
    for i in range(n + 1):
        missing = i < n and i not in done
        if missing and start is None:
            start = i
        elif not missing and start is not None:
            yield start, i
            start = None


def _remove_avatars(record: Mapping[str, Any], out: Path) -> None:
    """Delete the avatars a stale generation wrote into ``out`` (only files it recorded, by name)."""
    outputs = record.get("outputs") or {}
    recorded_dir = outputs.get("out_dir")
    if recorded_dir and Path(recorded_dir) != out.resolve():
        return  # another folder: the user's earlier pack stays where it is
    names = set(outputs.get("files") or []) | set((record.get("progress") or {}).get("files", {}).values())
    for name in names:
        if isinstance(name, str) and re.fullmatch(r"[\w.+-]+\.png", name):
            (out / name).unlink(missing_ok=True)
