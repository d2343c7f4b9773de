"""Avatars, avatar packs and how they are written: PNGs with A1111 metadata, a JSON index, a contact sheet.

The PNG text chunk ``parameters`` uses AUTOMATIC1111's layout (prompt, ``Negative prompt:`` line,
then ``Key: value`` pairs), which A1111, ComfyUI and civitai read back; it holds everything needed
to regenerate the image (seed, steps, sampler, CFG scale, size, LoRA scale).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, overload

import attrs

from ..atomic import atomic_path, write_json_atomic
from ..errors import ConfigError, GenerationError
from .a1111 import format_lora_hashes, lora_tag, parse_lora_hashes, sampler_and_schedule, strip_lora_tag
from .job import Job
from .schedulers import from_a1111_name

__all__ = ["Avatar", "AvatarPack", "PackWriter", "format_parameters", "parse_parameters", "read_png_parameters",
           "INDEX_NAME", "CONTACT_SHEET_NAME"]

INDEX_NAME = "avatars.json"
BATCH_CHUNK = "lensa-batch"  # PNG text chunk: the batch's members, for bit-identical regeneration
CONTACT_SHEET_NAME = "contact_sheet.jpg"

_PAIR = re.compile(r'\s*([A-Za-z][\w \-/+]*?):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')


@attrs.frozen(eq=False)
class Avatar(Job):
    """One generated image and every parameter that made it: its :class:`Job` (the fields it inherits),
    the image, and where it came from (model, batch, hashes). Compared by identity, as images are."""

    image: Any = attrs.field(repr=False, kw_only=True)  # PIL.Image.Image
    model: str = ""
    batch_size: int = 1
    batch_index: int = 0
    batch_id: str | None = None
    # Prompt, negative prompt, seed and style of every image of the batch, in order (when batch_size > 1):
    # floating-point results depend on the batch, so regenerating bit for bit re-renders all of it.
    batch_members: tuple[Mapping[str, Any], ...] = attrs.field(
        default=(), converter=lambda v: tuple(dict(m) for m in (v or ())))
    # For AUTOMATIC1111: the checkpoint's short hash, the kohya LoRA's name and short hash, the noise source.
    model_hash: str | None = None
    lora_name: str | None = None
    lora_hash: str | None = None
    rng: str | None = None
    # Face likeness to the subject's photos in [0, 1] when the pack was picked with keep_best (see
    # lensa_for_all.likeness); not a generation parameter, so it is not in the PNG's text.
    likeness: float | None = None

    # eq=False keeps these from Job, which compares by value; an avatar is one image, equal only to itself
    __eq__ = object.__eq__
    __ne__ = object.__ne__
    __hash__ = object.__hash__

    @property
    def job(self) -> Job:
        """The plain :class:`Job` that renders this image again (without image, model or batch)."""
        return Job(**{f.name: getattr(self, f.name) for f in attrs.fields(Job)})

    def parameters(self) -> dict[str, Any]:
        """The generation parameters, without the image (what the JSON index stores; ``likeness`` when scored)."""
        out = {f.name: getattr(self, f.name) for f in attrs.fields(Avatar) if f.name != "image"}
        out["batch_members"] = [dict(m) for m in self.batch_members]
        if self.likeness is None:
            del out["likeness"]
        return out

    def a1111_parameters(self) -> str:
        return format_parameters(self.parameters())

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the PNG with its ``parameters`` text chunk, atomically."""
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        info.add_text("parameters", self.a1111_parameters())
        if self.batch_members:
            info.add_itxt(BATCH_CHUNK, json.dumps([dict(m) for m in self.batch_members]))
        path = Path(path)
        with atomic_path(path) as tmp:
            self.image.save(tmp, format="PNG", pnginfo=info)
        return path

    @classmethod
    def from_png(cls, path: str | os.PathLike[str]) -> Avatar:
        """Read an avatar (image and parameters) back from a PNG this library or A1111 wrote."""
        from PIL import Image

        params = read_png_parameters(path)
        with Image.open(path) as im:
            image = im.convert("RGB")
            image.load()
        return cls(image=image, **params)


def _quote(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if any(c in text for c in ',:"\n') else text


def _num(x: float) -> str:
    return repr(float(x))


def format_parameters(p: Mapping[str, Any]) -> str:
    """AUTOMATIC1111's ``parameters`` text for the given :meth:`Avatar.parameters`."""
    sampler, schedule = sampler_and_schedule(p["scheduler"])
    pairs: list[tuple[str, Any]] = [
        ("Steps", p["num_inference_steps"]),
        ("Sampler", sampler),
        ("Schedule type", schedule),
        ("CFG scale", _num(p["guidance_scale"])),
        ("Seed", p["seed"]),
        ("Size", f"{p['width']}x{p['height']}"),
    ]
    if p.get("model_hash"):
        pairs.append(("Model hash", p["model_hash"]))
    if p.get("model"):
        pairs.append(("Model", p["model"]))
    if p.get("lora_scale") is not None:
        pairs.append(("Lora scale", _num(p["lora_scale"])))
    if p.get("style"):
        pairs.append(("Style", p["style"]))
    if int(p.get("batch_size", 1)) > 1:
        pairs += [("Batch size", p["batch_size"]), ("Batch pos", p["batch_index"])]
        if p.get("batch_id"):
            pairs.append(("Batch id", p["batch_id"]))
    prompt = p["prompt"]
    if p.get("lora_name") and p.get("lora_hash") and p.get("lora_scale") is not None:
        prompt = f"{prompt} {lora_tag(p['lora_name'], p['lora_scale'])}"
        pairs.append(("Lora hashes", format_lora_hashes({p["lora_name"]: p["lora_hash"]})))
    if p.get("rng"):
        pairs.append(("RNG", p["rng"]))
    from ..version import __version__

    # A1111 reads ``Version`` as its own release (v1.x.y) and changes behaviour for old ones: ours goes elsewhere.
    pairs.append(("Generator", f"lensa-for-all {__version__}"))
    lines = [prompt]
    if p.get("negative_prompt"):
        lines.append(f"Negative prompt: {p['negative_prompt']}")
    lines.append(", ".join(f"{k}: {_quote(v)}" for k, v in pairs))
    return "\n".join(lines)


def parse_parameters(text: str) -> dict[str, Any]:
    """The inverse of :func:`format_parameters`; also reads A1111's own images.

    Raises :class:`GenerationError` when the text lacks the fields needed to regenerate the image.
    """
    lines = text.strip("\n").split("\n")
    if not lines:
        raise GenerationError("The image has an empty 'parameters' text.")
    last = lines[-1]
    pairs: dict[str, str] = {}
    if len(_PAIR.findall(last)) >= 3:
        lines = lines[:-1]
        for key, value in _PAIR.findall(last):
            value = value.strip()
            if value.startswith('"') and value.endswith('"') and len(value) >= 2:
                value = json.loads(value)
            pairs[key.strip()] = value
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    target = prompt_lines
    for line in lines:
        if line.startswith("Negative prompt:"):
            target = negative_lines
            line = line[len("Negative prompt:"):].lstrip()
        target.append(line)
    prompt = "\n".join(prompt_lines).strip()
    loras = parse_lora_hashes(pairs.get("Lora hashes", ""))
    lora_name, lora_hash = next(iter(loras.items()), (None, None))
    if lora_name and "Lora scale" in pairs:  # ours: the tag was appended to the prompt the model was given
        prompt = strip_lora_tag(prompt, lora_name)
    try:
        width, height = (int(v) for v in pairs["Size"].lower().split("x"))
        out: dict[str, Any] = {
            "prompt": prompt,
            "negative_prompt": "\n".join(negative_lines).strip(),
            "seed": int(pairs["Seed"]),
            "num_inference_steps": int(pairs["Steps"]),
            "guidance_scale": float(pairs["CFG scale"]),
            "scheduler": from_a1111_name(pairs.get("Sampler", "DPM++ 2M Karras"), pairs.get("Schedule type")),
            "width": width,
            "height": height,
            "model": pairs.get("Model", ""),
            "lora_scale": float(pairs["Lora scale"]) if "Lora scale" in pairs else None,
            "style": pairs.get("Style") or None,
            "batch_size": int(pairs.get("Batch size", 1)),
            "batch_index": int(pairs.get("Batch pos", 0)),
            "batch_id": pairs.get("Batch id") or None,
            "model_hash": pairs.get("Model hash") or None,
            "lora_name": lora_name,
            "lora_hash": lora_hash,
            "rng": pairs.get("RNG") or None,
        }
    except (KeyError, ValueError) as exc:
        raise GenerationError(
            f"The image's generation parameters are incomplete or malformed ({exc}); it cannot be regenerated."
        ) from exc
    return out


def read_png_parameters(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed ``parameters`` text chunk of a PNG."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            chunks = dict(getattr(im, "text", {}) or im.info)
    except OSError as exc:
        raise GenerationError(f"Cannot read {path} as an image: {exc}") from exc
    text = chunks.get("parameters")
    if not text:
        raise GenerationError(f"{path} has no 'parameters' text chunk; it was not written by lensa-for-all or A1111.")
    params = parse_parameters(text)
    members = chunks.get(BATCH_CHUNK)
    if members:
        try:
            params["batch_members"] = [dict(m) for m in json.loads(members)]
        except (ValueError, TypeError) as exc:
            raise GenerationError(f"{path} has a malformed {BATCH_CHUNK!r} chunk: {exc}") from exc
    else:
        params["batch_members"] = []
    return params


class AvatarPack(Sequence[Avatar]):
    """The avatars of one generation run, in order. ``interrupted`` is true if Ctrl-C stopped it early."""

    def __init__(self, avatars: Sequence[Avatar] = (), *, interrupted: bool = False,
                 requested: int | None = None) -> None:
        self._avatars = list(avatars)
        self.interrupted = interrupted
        self.requested = requested if requested is not None else len(self._avatars)

    def __repr__(self) -> str:
        state = ", interrupted" if self.interrupted else ""
        return f"AvatarPack({len(self)} of {self.requested} avatars{state})"

    @overload
    def __getitem__(self, i: int) -> Avatar: ...
    @overload
    def __getitem__(self, i: slice) -> AvatarPack: ...
    def __getitem__(self, i: int | slice) -> Avatar | AvatarPack:
        if isinstance(i, slice):
            return AvatarPack(self._avatars[i])
        return self._avatars[i]

    def __len__(self) -> int:
        return len(self._avatars)

    def __iter__(self) -> Iterator[Avatar]:
        return iter(self._avatars)

    @property
    def images(self) -> list[Any]:
        return [a.image for a in self._avatars]

    def by_likeness(self) -> AvatarPack:
        """The avatars best likeness first (stable; unscored ones last, in pack order)."""
        ranked = sorted(self._avatars, key=lambda a: -a.likeness if a.likeness is not None else math.inf)
        return AvatarPack(ranked, interrupted=self.interrupted, requested=self.requested)

    def contact_sheet(self, *, columns: int | None = None, cell: int | None = None, padding: int = 4,
                      sort: str | None = None) -> Any:
        """A grid of the pack's images: ``columns`` (about square by default) of ``cell``-px square cells.

        ``cell`` defaults to the largest image side, capped at 256 px so a 40-image sheet stays small.
        ``sort="likeness"`` puts the best likeness first (see :meth:`by_likeness`); the default keeps pack order.
        """
        from PIL import Image

        if sort not in (None, "likeness"):
            raise ConfigError(f"sort must be None or 'likeness', not {sort!r}.")
        if sort == "likeness":
            return self.by_likeness().contact_sheet(columns=columns, cell=cell, padding=padding)
        if not self._avatars:
            raise GenerationError("The pack is empty; there is nothing to put on a contact sheet.")
        n = len(self._avatars)
        if cell is None:
            cell = min(256, max(max(a.image.size) for a in self._avatars))
        cols = columns or math.ceil(math.sqrt(n))
        rows = math.ceil(n / cols)
        size = (cols * cell + (cols + 1) * padding, rows * cell + (rows + 1) * padding)
        sheet = Image.new("RGB", size, (24, 24, 24))
        for i, avatar in enumerate(self._avatars):
            thumb = avatar.image.convert("RGB")
            thumb.thumbnail((cell, cell))
            r, c = divmod(i, cols)
            x = padding + c * (cell + padding) + (cell - thumb.width) // 2
            y = padding + r * (cell + padding) + (cell - thumb.height) // 2
            sheet.paste(thumb, (x, y))
        return sheet

    def save(self, out_dir: str | os.PathLike[str], *, contact_sheet: bool = True) -> list[Path]:
        """Write every avatar as a PNG under a unique name, the JSON index and the contact sheet."""
        writer = PackWriter(out_dir)
        paths = [writer.add(a, i) for i, a in enumerate(self._avatars)]
        writer.finish(self if contact_sheet else None)
        return paths

    @classmethod
    def load(cls, out_dir: str | os.PathLike[str]) -> AvatarPack:
        """A pack read back from a folder :meth:`save` wrote (via its index)."""
        from PIL import Image

        out_dir = Path(out_dir)
        entries = PackWriter.read_index(out_dir)
        avatars = []
        for e in entries:
            params = {k: v for k, v in e.items() if k != "file"}
            with Image.open(out_dir / e["file"]) as im:
                image = im.convert("RGB")
            avatars.append(Avatar(image=image, **params))
        return cls(avatars)


class PackWriter:
    """Writes avatars into a folder one at a time, so an interrupted run keeps what it finished."""

    def __init__(self, out_dir: str | os.PathLike[str]) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._entries = [e for e in self.read_index(self.out_dir) if (self.out_dir / e["file"]).is_file()]
        self.paths: list[Path] = []
        self.pending: dict[str, Any] | None = _read_pending(self.out_dir)

    @staticmethod
    def read_index(out_dir: Path) -> list[dict[str, Any]]:
        index = out_dir / INDEX_NAME
        if not index.is_file():
            return []
        try:
            data = json.loads(index.read_text(encoding="utf-8"))
            return list(data["avatars"])
        except (ValueError, KeyError, TypeError) as exc:
            raise GenerationError(f"{index} is not a valid avatar index ({exc}); move it away and save again.") from exc

    def _unique(self, stem: str) -> Path:
        taken = {e["file"] for e in self._entries}
        path = self.out_dir / f"{stem}.png"
        k = 2
        while path.exists() or path.name in taken:
            path = self.out_dir / f"{stem}-{k}.png"
            k += 1
        return path

    def add(self, avatar: Avatar, position: int | None = None) -> Path:
        """Write ``avatar`` under a new unique name and update the index."""
        position = len(self.paths) if position is None else position
        style = re.sub(r"[^a-z0-9_\-]+", "-", (avatar.style or "prompt").lower()).strip("-") or "prompt"
        path = avatar.save(self._unique(f"{position:03d}-{style}-{avatar.seed}"))
        self._entries.append({"file": path.name, **avatar.parameters()})
        self.paths.append(path)
        self._write_index()
        return path

    def begin(self, request: Mapping[str, Any]) -> None:
        """Record the pack being rendered (its seed and a fingerprint of its jobs) until :meth:`finish`
        completes it, so a rerun after Ctrl-C can continue this pack instead of starting a second one."""
        self.pending = dict(request)
        self._write_index()

    def adopt(self, position: int, seed: int) -> Path | None:
        """The intact PNG of image ``position`` with ``seed`` if the folder already has it, else ``None``.

        An interrupted run may have written the PNG and been stopped before recording it anywhere; such
        a file joins the index instead of being rendered again beside itself. A damaged one (truncated,
        undecodable) is removed so the image is rendered again under its own name.
        """
        name = re.compile(rf"{position:03d}-[a-z0-9_\-]+-{seed}(-\d+)?\.png")
        for path in sorted(self.out_dir.glob(f"{position:03d}-*-{seed}*.png")):
            if not name.fullmatch(path.name):
                continue
            try:
                avatar = Avatar.from_png(path)
            except (GenerationError, OSError, SyntaxError, ValueError):
                path.unlink(missing_ok=True)
                self._entries = [e for e in self._entries if e["file"] != path.name]
                continue
            if avatar.seed != seed:
                continue
            if path.name not in {e["file"] for e in self._entries}:
                self._entries.append({"file": path.name, **avatar.parameters()})
                self._write_index()
            return path
        return None

    def _write_index(self, sheet: str | None = None) -> None:
        data: dict[str, Any] = {"version": 1, "avatars": self._entries}
        if sheet:
            data["contact_sheet"] = sheet
        if self.pending:
            data["pending"] = self.pending
        write_json_atomic(self.out_dir / INDEX_NAME, data)

    def finish(self, pack: AvatarPack | None, *, sort: str | None = None) -> Path | None:
        """Write the contact sheet of ``pack`` (if given and not empty; ``sort`` as in
        :meth:`AvatarPack.contact_sheet`) and the final index.

        A pack that is complete (not ``interrupted``) clears the pending record of :meth:`begin`.
        """
        if pack is not None and not pack.interrupted:
            self.pending = None
        if pack is None or len(pack) == 0:
            self._write_index()
            return None
        sheet = self.out_dir / CONTACT_SHEET_NAME
        with atomic_path(sheet) as tmp:
            pack.contact_sheet(sort=sort).save(tmp, format="JPEG", quality=90)
        self._write_index(CONTACT_SHEET_NAME)
        return sheet


def _read_pending(out_dir: Path) -> dict[str, Any] | None:
    """The unfinished pack recorded in ``out_dir``'s index (see :meth:`PackWriter.begin`), if any."""
    try:
        data = json.loads((out_dir / INDEX_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    pending = data.get("pending") if isinstance(data, dict) else None
    return dict(pending) if isinstance(pending, dict) and isinstance(pending.get("seed"), int) else None
