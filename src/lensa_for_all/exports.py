"""A trained model folder, exported as the files one tool loads: A1111, ComfyUI, diffusers or the Hub.

Every export checks the folder first (it must be one this library wrote, and complete), then lists
the files it would write and refuses to replace any unless ``force``; only then does it write, each
file atomically. ``INSTALL.txt`` (and the returned :class:`ExportResult`) says where each file goes.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import attrs

from .atomic import atomic_path, write_text_atomic
from .errors import ConfigError, ModelNotFoundError

__all__ = ["EXPORT_FORMATS", "ExportResult", "export_model", "INSTALL_NAME"]

ExportFormat = Literal["a1111", "comfyui", "diffusers", "hub"]
EXPORT_FORMATS: tuple[str, ...] = ("a1111", "comfyui", "diffusers", "hub")
INSTALL_NAME = "INSTALL.txt"
MANIFEST_NAME = "lensa_manifest.json"
_PIPELINE_PARTS = ("model_index.json", "unet", "vae", "text_encoder", "tokenizer", "scheduler")

# where each tool looks for a file, by format and kind
_PLACES = {
    ("a1111", "lora"): "stable-diffusion-webui/models/Lora/",
    ("a1111", "checkpoint"): "stable-diffusion-webui/models/Stable-diffusion/",
    ("comfyui", "lora"): "ComfyUI/models/loras/ (load it with a LoraLoader node)",
    ("comfyui", "checkpoint"): "ComfyUI/models/checkpoints/ (load it with CheckpointLoaderSimple)",
}


@attrs.frozen
class ExportResult:
    """What an export wrote: the files, and one line per file saying where it goes."""

    tool: str
    out_dir: Path
    files: tuple[Path, ...]
    instructions: tuple[str, ...]


@attrs.frozen
class _Planned:
    relative: str  # path under the export folder
    write: Callable[[Path], None]  # writes the file at the given (temporary) path


def _load_manifest(folder: Path) -> dict[str, Any]:
    file = folder / MANIFEST_NAME
    if not folder.is_dir():
        raise ModelNotFoundError(f"{folder} does not exist or is not a folder.")
    if not file.is_file() and any((folder / name).exists() for name in ("pytorch_lora_weights.safetensors",
                                                                         "model_index.json", "unet")):
        raise ModelNotFoundError(
            f"{folder} is half-written: it holds weights but no {MANIFEST_NAME}, which training writes last. "
            "The run did not finish; resume or rerun it, then export."
        )
    if not file.is_file():
        raise ModelNotFoundError(
            f"{folder} is not a lensa-for-all model folder (it has no {MANIFEST_NAME}). Export the folder "
            "`lensa-for-all train` wrote; to convert another diffusers model use diffusers' own scripts."
        )
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ModelNotFoundError(f"{file} is not valid JSON ({exc}); the training run may not have finished.") from exc
    if not isinstance(manifest, dict) or manifest.get("method") not in ("lora", "full"):
        raise ModelNotFoundError(f"{file} does not describe a LoRA or full fine-tune; it was not written by "
                                 "lensa-for-all's trainer.")
    missing = [name for name in manifest.get("files") or [] if not (folder / name).is_file()]
    required = ([manifest.get("lora_weights"), manifest.get("kohya_weights")] if manifest["method"] == "lora"
                else list(_PIPELINE_PARTS))
    missing += [str(name) for name in required if name and not (folder / str(name)).exists()
                and str(name) not in missing]
    if missing:
        shown = ", ".join(sorted(missing)[:5]) + (" ..." if len(missing) > 5 else "")
        raise ModelNotFoundError(
            f"{folder} is incomplete: {shown} missing. The training run was interrupted or the folder was only "
            "partly copied; finish or resume the run (or copy the folder again), then export."
        )
    return manifest


def _copy(src: Path) -> Callable[[Path], None]:
    def copy(tmp: Path) -> None:
        shutil.copyfile(src, tmp)

    return copy


def _checkpoint(folder: Path, manifest: dict[str, Any], precision: str) -> Callable[[Path], None]:
    existing = manifest.get("checkpoint_weights")
    if existing and (folder / existing).is_file() and precision == "fp16":
        return _copy(folder / existing)

    def convert(tmp: Path) -> None:
        from .training.single_file import write_single_file

        write_single_file(folder, tmp, precision="fp32" if precision == "fp32" else "fp16")

    return convert


def _plan(folder: Path, manifest: dict[str, Any], fmt: str, precision: str) -> tuple[list[_Planned], list[str]]:
    token = str(manifest.get("token") or "model")
    is_lora = manifest["method"] == "lora"
    if fmt in ("a1111", "comfyui"):
        if is_lora:
            name = str(manifest["kohya_weights"])
            item = _Planned(name, _copy(folder / name))
            kind, what = "lora", f"use it in a prompt as <lora:{Path(name).stem}:1>"
        else:
            name = str(manifest.get("checkpoint_weights") or f"{token}_checkpoint.safetensors")
            item = _Planned(name, _checkpoint(folder, manifest, precision))
            kind, what = "checkpoint", "pick it as the model"
        trigger = f"; trigger word: {token}" if token else ""
        return [item], [f"{name}: copy into {_PLACES[(fmt, kind)]}, then {what}{trigger}."]
    # diffusers and hub: the diffusers layout plus our manifest, so AvatarModel.load reads it back
    keep = [MANIFEST_NAME, "README.md", "training_config.json"]
    if is_lora:
        keep.append(str(manifest["lora_weights"]))
        if fmt == "hub":
            keep.append(str(manifest["kohya_weights"]))
    else:
        parts = [str(p.relative_to(folder)) for part in _PIPELINE_PARTS for p in
                 ([folder / part] if (folder / part).is_file() else sorted((folder / part).rglob("*")))
                 if p.is_file()]
        keep += parts
        if fmt == "hub" and manifest.get("checkpoint_weights"):
            keep.append(str(manifest["checkpoint_weights"]))
    items = [_Planned(rel, _copy(folder / rel)) for rel in dict.fromkeys(keep) if (folder / rel).is_file()]
    if fmt == "diffusers":
        load = ("pipe = StableDiffusionPipeline.from_pretrained(BASE); pipe.load_lora_weights(DIR)" if is_lora
                else "StableDiffusionPipeline.from_pretrained(DIR)")
        lines = [f"DIR: load with diffusers: {load}; or AvatarModel.load(DIR) / lensa-for-all generate DIR."]
    else:
        lines = ["DIR: upload with `hf upload USER/REPO DIR` (or `huggingface-cli upload USER/REPO DIR`); "
                 "AvatarModel.load('USER/REPO') then loads it."]
    return items, lines


def export_model(model_dir: str | os.PathLike[str], tool: ExportFormat, dest: str | os.PathLike[str], *,
                 force: bool = False, precision: Literal["fp16", "fp32"] = "fp16") -> ExportResult:
    """Write the files ``tool`` loads from the trained folder ``model_dir`` into ``dest``.

    * ``a1111`` / ``comfyui``: the kohya LoRA file, or for a full fine-tune the single-file checkpoint
      (converted now if the folder predates it; ``precision`` applies to that conversion);
    * ``diffusers``: the diffusers layout with the manifest and model card;
    * ``hub``: the same plus the single-file weights, ready for ``hf upload``.

    Raises :class:`~lensa_for_all.errors.ModelNotFoundError` for a folder that is not a complete
    lensa-for-all model and :class:`~lensa_for_all.errors.ConfigError` when a file would be replaced
    without ``force``; in both cases nothing is written.
    """
    if tool not in EXPORT_FORMATS:
        raise ConfigError(f"Unknown export format {tool!r}; choose one of {', '.join(EXPORT_FORMATS)}.")
    if precision not in ("fp16", "fp32"):
        raise ConfigError(f"precision must be 'fp16' or 'fp32', not {precision!r}.")
    folder = Path(model_dir)
    manifest = _load_manifest(folder)
    out = Path(dest)
    if out.resolve() == folder.resolve():
        raise ConfigError(f"Export into another folder than the model itself ({folder}).")
    items, lines = _plan(folder, manifest, tool, precision)
    targets = [out / item.relative for item in items]
    if tool != "hub":
        targets.append(out / INSTALL_NAME)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a folder.")
    taken = [t for t in targets if t.exists()]
    if taken and not force:
        shown = ", ".join(str(t.relative_to(out)) for t in taken[:5]) + (" ..." if len(taken) > 5 else "")
        raise ConfigError(f"{out} already holds {shown}; nothing was written. Pass --force (force=True) to "
                          "replace them, or choose another folder.")
    for item in items:
        with atomic_path(out / item.relative) as tmp:
            item.write(tmp)
    instructions = tuple(line.replace("DIR", str(out)) for line in lines)
    if tool != "hub":
        write_text_atomic(out / INSTALL_NAME, f"Exported from {folder.name} for {tool}.\n\n"
                          + "\n".join(instructions) + "\n")
    return ExportResult(tool=tool, out_dir=out, files=tuple(targets), instructions=instructions)
