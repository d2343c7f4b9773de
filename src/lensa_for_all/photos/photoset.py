"""PhotoSet: a folder (or list) of a user's photos, checked, and turned into a clean training set.

Checking (``from_folder``/``from_files``) reads each file once, one at a time, at reduced size, and
keeps only small facts about it (:class:`Photo`). ``prepare`` reads each accepted file again, crops
and writes square PNGs plus ``manifest.json``; the manifest makes a second identical call free.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs

from ..atomic import atomic_path, write_json_atomic
from ..errors import PhotoSetError, TooFewPhotosError
from ..subjects import classes_of_kind, kind_of
from .faces import Box, detect_faces, face_crop, saliency_crop
from .identity import IdentityCheck
from .quality import BLUR_THRESHOLD, NEAR_DUPLICATE_DISTANCE, hamming, perceptual_hash, sharpness
from .reading import DEFAULT_MAX_PIXELS, OpenedPhoto, UnreadablePhoto, open_photo
from .report import FileReport, QCReport

__all__ = ["PERSON_CLASSES", "Photo", "PhotoSet", "Rejection"]

log = logging.getLogger(__name__)

PERSON_CLASSES = classes_of_kind("person")
"""Subject classes that get face detection and a face-centred crop; others get a saliency crop.

The table is :mod:`lensa_for_all.subjects`; ``subject_kind="person"`` gives an unlisted class the same check."""

ANALYSIS_SIDE = 512
"""Short side the photo is decoded at for the check (faces, sharpness, hash): enough, and cheap."""

RECOMMENDED_SIDE = 512
MAX_RECOMMENDED = 20
MANIFEST = "manifest.json"
CROP_VERSION = 1  # bump when the crop or resize changes, so old prepared sets are redone

_JUNK_NAMES = frozenset({".ds_store", "thumbs.db", "ehthumbs.db", "desktop.ini", ".localized", ".directory"})


@attrs.frozen
class Photo:
    """An accepted photo: where it is and what the check found. ``size`` is (w, h) after EXIF orientation."""

    source: Path
    size: tuple[int, int]
    format: str
    sha256: str
    phash: int
    sharpness: float
    crop_box: Box
    faces: int | None = None
    face_box: Box | None = None
    warnings: tuple[str, ...] = ()
    likeness: float | None = None
    """Median face likeness to the other photos, in [0, 1] (the ``[likeness]`` check); None when not run."""


@attrs.frozen
class Rejection:
    """A file that will not be used, with a ``reason`` a user understands and a machine-readable ``code``."""

    path: Path
    reason: str
    code: str
    duplicate_of: Path | None = None


def _is_junk(path: Path) -> bool:
    name = path.name.lower()
    return name in _JUNK_NAMES or name.startswith("._")


def _within(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


class PhotoSet:
    """A checked set of photos of one subject. Build it with :meth:`from_folder` or :meth:`from_files`.

    ``photos`` are the accepted photos, ``rejected`` the refused files with reasons, ``skipped`` the
    OS junk and folders that were ignored. Source files are only ever read.
    """

    def __init__(self, photos: Sequence[Photo], rejected: Sequence[Rejection], *, subject_class: str,
                 min_photos: int, skipped: Sequence[Path] = (), root: Path | None = None,
                 subject_kind: str | None = None) -> None:
        self.photos: list[Photo] = list(photos)
        self.rejected: list[Rejection] = list(rejected)
        self.skipped: list[Path] = list(skipped)
        self.subject_class = subject_class
        self.subject_kind = kind_of(subject_class, subject_kind)
        self.min_photos = min_photos
        self.root = root
        self.identity: IdentityCheck | None = None
        """Whether every photo shows the same person (``[likeness]`` extra, person subjects); else None."""

    def __repr__(self) -> str:
        return (f"PhotoSet({len(self.photos)} photos, {len(self.rejected)} rejected, "
                f"subject_class={self.subject_class!r})")

    def __len__(self) -> int:
        return len(self.photos)

    # ------------------------------------------------------------------ building

    @classmethod
    def from_folder(cls, path: str | os.PathLike[str], subject_class: str = "person", min_photos: int = 4,
                    min_side: int = 256, max_aspect: float = 3.0, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                    near_duplicate_distance: int = NEAR_DUPLICATE_DISTANCE,
                    subject_kind: str | None = None, likeness: bool | None = None) -> PhotoSet:
        """Check every file directly in ``path`` (sub-folders and OS junk are skipped).

        Raises :class:`~lensa_for_all.errors.TooFewPhotosError` (a ``PhotoSetError``) when fewer than
        ``min_photos`` are usable; its message and ``report`` say why each file was rejected.
        Symbolic links that point outside the folder are rejected. Faces are looked for when the class
        is a person (:mod:`lensa_for_all.subjects`) or ``subject_kind="person"``. For a person, ``likeness``
        compares the faces (photos of someone else are flagged, :attr:`identity`): None runs it when the
        ``[likeness]`` extra is installed, True requires it (:class:`~lensa_for_all.errors.LikenessUnavailable`
        without it), False skips it.
        """
        root = Path(path)
        if not root.is_dir():
            raise PhotoSetError(f"Photo folder {root} does not exist or is not a folder; pass the folder "
                                "that holds the photos.")
        try:
            entries = sorted(root.iterdir(), key=lambda p: p.name)
        except OSError as exc:
            raise PhotoSetError(f"Cannot list {root} ({exc.strerror}); check its permissions.") from exc
        if not any(not _is_junk(p) and (p.is_file() or p.is_symlink()) for p in entries):
            raise PhotoSetError(f"No files in {root}: put 4-20 photos of the subject directly in that folder "
                                "(sub-folders are not read).")
        return cls._check(entries, root=root, subject_class=subject_class, min_photos=min_photos,
                          min_side=min_side, max_aspect=max_aspect, max_pixels=max_pixels,
                          near_duplicate_distance=near_duplicate_distance, subject_kind=subject_kind,
                          likeness=likeness)

    @classmethod
    def from_files(cls, files: Iterable[str | os.PathLike[str]], subject_class: str = "person",
                   min_photos: int = 4, min_side: int = 256, max_aspect: float = 3.0, *,
                   max_pixels: int = DEFAULT_MAX_PIXELS,
                   near_duplicate_distance: int = NEAR_DUPLICATE_DISTANCE,
                   subject_kind: str | None = None, likeness: bool | None = None) -> PhotoSet:
        """Check the given files (in the given order; the first of two duplicates is kept)."""
        return cls._check([Path(f) for f in files], root=None, subject_class=subject_class,
                          min_photos=min_photos, min_side=min_side, max_aspect=max_aspect,
                          max_pixels=max_pixels, near_duplicate_distance=near_duplicate_distance,
                          subject_kind=subject_kind, likeness=likeness)

    @classmethod
    def _check(cls, entries: Sequence[Path], *, root: Path | None, subject_class: str, min_photos: int,
               min_side: int, max_aspect: float, max_pixels: int, near_duplicate_distance: int,
               subject_kind: str | None = None, likeness: bool | None = None) -> PhotoSet:
        if min_photos < 1:
            raise PhotoSetError(f"min_photos must be at least 1, got {min_photos}.")
        if min_side < 1 or max_aspect < 1:
            raise PhotoSetError("min_side must be positive and max_aspect at least 1 (a square).")
        subject_class = subject_class.strip().lower() or "person"
        find_faces = kind_of(subject_class, subject_kind) == "person"
        real_root = root.resolve() if root is not None else None
        photos: list[Photo] = []
        rejected: list[Rejection] = []
        skipped: list[Path] = []
        by_hash: dict[str, Path] = {}
        for path in entries:
            if _is_junk(path):
                skipped.append(path)
                continue
            if path.is_symlink():
                target = path.resolve()
                if real_root is not None and not _within(target, real_root):
                    rejected.append(Rejection(path, "This is a link to a file outside the photo folder; copy "
                                              "the photo into the folder instead.", "outside_link"))
                    continue
                if not target.exists():
                    rejected.append(Rejection(path, "This link points to a file that does not exist.",
                                              "broken_link"))
                    continue
            if path.is_dir():
                skipped.append(path)
                continue
            if not path.exists():
                rejected.append(Rejection(path, "The file does not exist.", "missing"))
                continue
            if not path.is_file():
                skipped.append(path)  # FIFOs, sockets, devices: never open them
                continue
            outcome = _inspect(path, find_faces=find_faces, min_side=min_side, max_aspect=max_aspect,
                               max_pixels=max_pixels, seen=by_hash)
            (photos if isinstance(outcome, Photo) else rejected).append(outcome)  # type: ignore[arg-type]
        photos, near = _drop_near_duplicates(photos, near_duplicate_distance)
        rejected += near
        identity = None
        if find_faces and photos and _use_likeness(likeness):
            from .identity import check_identity

            identity = check_identity([p.source for p in photos])
            photos = [_with_identity(p, identity) for p in photos]
        order = {p: i for i, p in enumerate(entries)}
        rejected.sort(key=lambda r: order.get(r.path, 0))
        photoset = cls(photos, rejected, subject_class=subject_class, min_photos=min_photos, skipped=skipped,
                       root=root, subject_kind=subject_kind)
        photoset.identity = identity
        if len(photos) < min_photos:
            where = f" in {root}" if root is not None else ""
            lines = [f"Only {len(photos)} usable photo{'s' if len(photos) != 1 else ''}{where}; at least "
                     f"{min_photos} are needed and 10-20 work best. Add more photos of the subject."]
            if rejected:
                lines.append("Rejected:")
                lines += [f"  {r.path.name}: {r.reason}" for r in rejected]
            raise TooFewPhotosError("\n".join(lines), report=photoset.report())
        return photoset

    # ------------------------------------------------------------------ reporting

    @property
    def is_person(self) -> bool:
        return self.subject_kind == "person"

    def warnings(self) -> list[str]:
        """Set-level warnings (per-photo ones are on each :class:`Photo`)."""
        out = []
        if len(self.photos) > MAX_RECOMMENDED:
            out.append(f"{len(self.photos)} photos: more than {MAX_RECOMMENDED} rarely helps and makes training "
                       "slower; keep your best 10-20.")
        if self.identity is not None and self.identity.mismatched:
            names = ", ".join(p.name for p in self.identity.mismatched)
            out.append(f"Not the same person as the other photos: {names}. Remove photos of anyone but the "
                       "subject.")
        return out

    def advice(self) -> list[str]:
        """Tips from what works for DreamBooth: 10-20 varied photos of only the subject."""
        n = len(self.photos)
        tips = []
        if n < 10:
            tips.append(f"You have {n} usable photos; 10-20 work best.")
        if self.is_person:
            tips.append("Mix close-ups, upper-body and full-body shots; vary backgrounds, lighting and "
                        "expressions; keep the face uncovered (no sunglasses) and only the subject in frame.")
            no_face = sum(p.faces == 0 for p in self.photos)
            several = sum((p.faces or 0) > 1 for p in self.photos)
            if no_face:
                tips.append(f"{no_face} photo(s) show no detectable face; replace them with photos where the "
                            "face is visible.")
            if several:
                tips.append(f"{several} photo(s) show several faces; photos of the subject alone work best.")
            if self.identity is None:
                from ..likeness import INSTALL_HINT

                tips.append(f"To check that every photo shows the same person, install face likeness: "
                            f"{INSTALL_HINT}")
        else:
            tips.append("Mix close-ups and full-body shots from different angles; vary backgrounds and lighting.")
        blurry = sum(p.sharpness < BLUR_THRESHOLD for p in self.photos)
        if blurry:
            tips.append(f"{blurry} photo(s) look blurry; sharp photos give sharper avatars.")
        return tips

    def report(self) -> QCReport:
        """The QC report: every file's outcome, set warnings and advice (``.to_json()``, a rich table)."""
        files: list[tuple[Path, FileReport]] = []
        for p in self.photos:
            files.append((p.source, FileReport(str(p.source), "accepted", size=p.size, faces=p.faces,
                                               sharpness=p.sharpness, warnings=p.warnings,
                                               likeness=p.likeness)))
        for r in self.rejected:
            files.append((r.path, FileReport(str(r.path), "rejected", reason=r.reason, code=r.code,
                                             duplicate_of=str(r.duplicate_of) if r.duplicate_of else None)))
        for s in self.skipped:
            files.append((s, FileReport(str(s), "skipped", reason="Not a photo (a folder or system file).",
                                        code="skipped")))
        files.sort(key=lambda item: str(item[0]))
        return QCReport(self.subject_class, self.min_photos, tuple(f for _, f in files),
                        tuple(self.warnings()), tuple(self.advice()),
                        identity=self.identity.to_dict() if self.identity is not None else None)

    # ------------------------------------------------------------------ preparing

    def prepare(self, out_dir: str | os.PathLike[str], resolution: int = 512) -> Path:
        """Write each photo as a ``resolution`` square RGB PNG plus ``manifest.json`` into ``out_dir``.

        Files are written under temporary names and renamed. A second call with the same photos and
        settings finds them in the manifest and writes nothing. PNGs carry no EXIF (so no GPS).
        """
        if resolution < 64 or resolution % 8:
            raise PhotoSetError(f"resolution must be a multiple of 8 and at least 64, got {resolution}.")
        out = Path(out_dir)
        real_out = out.resolve()
        sources = {p.source.resolve().parent for p in self.photos}
        if self.root is not None:
            sources.add(self.root.resolve())
        for src in sources:
            if real_out == src or _within(real_out, src):
                raise PhotoSetError(f"The output folder {out} is inside the photo folder {src}; choose a folder "
                                    "outside it (source photos are never written to).")
        out.mkdir(parents=True, exist_ok=True)
        settings = {"resolution": resolution, "crop_version": CROP_VERSION}
        old = _read_manifest(out / MANIFEST)
        old_files = {e.get("file") for e in old.get("photos", []) if isinstance(e, dict)}
        old_entries = {e["file"]: e for e in old.get("photos", [])
                       if isinstance(e, dict) and old.get("settings") == settings and "file" in e}
        entries: list[dict[str, Any]] = []
        wrote = 0
        for photo in self.photos:
            name = _output_name(photo)
            entry = {"file": name, "source": str(photo.source), "sha256": photo.sha256,
                     "size": list(photo.size), "crop_box": list(photo.crop_box.as_tuple()), "faces": photo.faces}
            prev = old_entries.get(name)
            if prev and _same_output(prev, entry, out / name):
                entries.append(prev)
                continue
            entry["output_sha256"] = _write_square(photo, out / name, resolution)
            entries.append(entry)
            wrote += 1
        kept = {e["file"] for e in entries}
        stale = {f for f in old_files - kept if isinstance(f, str) and _SAFE_FILE.fullmatch(f)}
        for name in stale:  # only files an earlier prepare() wrote here, by the names it gives
            (out / name).unlink(missing_ok=True)
        if not wrote and not stale and old_files == kept and old.get("subject_class") == self.subject_class:
            log.info("%s is already prepared; nothing to do", out)
            return out
        manifest = {"format": 1, "subject_class": self.subject_class, "settings": settings, "photos": entries}
        write_json_atomic(out / MANIFEST, manifest)
        log.info("prepared %d photos in %s (%d written)", len(entries), out, wrote)
        return out


# ---------------------------------------------------------------------- per-photo work


def _inspect(path: Path, *, find_faces: bool, min_side: int, max_aspect: float, max_pixels: int,
             seen: dict[str, Path]) -> Photo | Rejection:
    """Check one file; decode it (small) only if its header passes every cheap test."""
    try:
        opened = open_photo(path, max_pixels=max_pixels)
    except UnreadablePhoto as exc:
        return Rejection(path, exc.reason, exc.code)
    try:
        w, h = opened.size
        if min(w, h) < min_side:
            return Rejection(path, f"Too small: {w} x {h} pixels; the short side must be at least {min_side} "
                             f"(at least {RECOMMENDED_SIDE} recommended).", "too_small")
        aspect = max(w, h) / min(w, h)
        if aspect > max_aspect:
            return Rejection(path, f"Too narrow: {w} x {h} is {aspect:.1f}:1, over {max_aspect:g}:1 "
                             "(a panorama or screenshot); crop it around the subject.", "aspect")
        if opened.sha256 in seen:
            first = seen[opened.sha256]
            return Rejection(path, f"An exact copy of {first.name}; one copy is kept.", "duplicate", first)
        try:
            photo = _analyse(path, opened, find_faces)
        except UnreadablePhoto as exc:
            return Rejection(path, exc.reason, exc.code)
        seen[opened.sha256] = path
        return photo
    finally:
        opened.close()


def _analyse(path: Path, opened: OpenedPhoto, find_faces: bool) -> Photo:
    import numpy as np

    w, h = opened.size
    small = opened.decode(ANALYSIS_SIDE, gray=True)
    scale = small.width / w
    gray = np.array(small, dtype=np.uint8)
    small.close()
    warnings: list[str] = []
    if min(w, h) < RECOMMENDED_SIDE:
        warnings.append(f"Small ({w} x {h}): under {RECOMMENDED_SIDE} px on the short side the model learns "
                        "less detail; use the original photo if you have it.")
    sharp = sharpness(gray)
    if sharp < BLUR_THRESHOLD:
        warnings.append(f"Looks blurry (sharpness {sharp:.0f}, under {BLUR_THRESHOLD:.0f}); use a sharper photo.")
    faces: int | None = None
    face_box: Box | None = None
    if find_faces:
        found = detect_faces(gray)
        faces = len(found)
        if found:
            face_box = _clamp(found[0].scaled(1 / scale), (w, h))
            crop = face_crop((w, h), face_box)
            if len(found) > 1:
                warnings.append(f"{len(found)} faces found; the crop follows the clearest. Photos of the subject "
                                "alone work best.")
        else:
            warnings.append("No face found; a centre crop is used. If the face is hidden or turned away, "
                            "replace the photo.")
    if face_box is None:
        crop = _square_from_small(saliency_crop(gray), scale, (w, h)) if faces is None else _centre_square((w, h))
    return Photo(source=path, size=(w, h), format=opened.kind, sha256=opened.sha256,
                 phash=perceptual_hash(gray), sharpness=sharp, crop_box=crop, faces=faces, face_box=face_box,
                 warnings=tuple(warnings))


def _use_likeness(likeness: bool | None) -> bool:
    from ..likeness import is_available

    if likeness is None:
        return is_available()
    if likeness and not is_available():
        from ..errors import LikenessUnavailable
        from ..likeness import INSTALL_HINT

        raise LikenessUnavailable(f"Comparing the faces in the photos needs the likeness extra: {INSTALL_HINT}")
    return likeness


def _with_identity(photo: Photo, identity: IdentityCheck) -> Photo:
    """The photo with its likeness to the others and, if it does not match or shows several faces, a warning."""
    warnings = list(photo.warnings)
    score = identity.likeness.get(photo.source)
    if photo.source in identity.mismatched:
        warnings.append(f"The face does not match the other photos (likeness {score:.2f}, under 0.5): is it "
                        "someone else? Remove it unless it is the subject.")
    several = identity.faces.get(photo.source, 0)
    if several > 1 and not (photo.faces or 0) > 1:
        warnings.append(f"{several} faces found; photos of the subject alone work best.")
    return attrs.evolve(photo, likeness=score, warnings=tuple(warnings))


def _clamp(box: Box, size: tuple[int, int]) -> Box:
    w, h = size
    return Box(max(0, box.left), max(0, box.top), min(w, box.right), min(h, box.bottom))


def _centre_square(size: tuple[int, int]) -> Box:
    w, h = size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return Box(left, top, left + side, top + side)


def _square_from_small(box: Box, scale: float, size: tuple[int, int]) -> Box:
    """Map a largest-square box found on the analysis image to the full-size photo."""
    w, h = size
    side = min(w, h)
    left = min(max(0, round(box.left / scale)), w - side)
    top = min(max(0, round(box.top / scale)), h - side)
    return Box(left, top, left + side, top + side)


def _drop_near_duplicates(photos: list[Photo], distance: int) -> tuple[list[Photo], list[Rejection]]:
    """Keep the best of each group of near-identical photos (most pixels, then sharpest, then first)."""
    if distance < 0:
        return photos, []
    rank = sorted(range(len(photos)),
                  key=lambda i: (-(photos[i].size[0] * photos[i].size[1]), -photos[i].sharpness, i))
    kept: list[int] = []
    rejected: dict[int, Rejection] = {}
    for i in rank:
        match = next((k for k in kept if hamming(photos[i].phash, photos[k].phash) <= distance), None)
        if match is None:
            kept.append(i)
        else:
            best = photos[match].source
            rejected[i] = Rejection(photos[i].source, f"Nearly the same picture as {best.name} (resized, "
                                    "re-encoded or lightly edited); the larger, sharper one is kept.",
                                    "near_duplicate", best)
    return [p for i, p in enumerate(photos) if i not in rejected], [rejected[i] for i in sorted(rejected)]


_SAFE = re.compile(r"[^A-Za-z0-9_-]+")
_SAFE_FILE = re.compile(r"[A-Za-z0-9_-]+-[0-9a-f]{10}\.png")


def _output_name(photo: Photo) -> str:
    stem = _SAFE.sub("_", photo.source.stem).strip("_")[:40] or "photo"
    return f"{stem}-{photo.sha256[:10]}.png"


def _read_manifest(path: Path) -> dict[str, Any]:
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _file_sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _same_output(prev: dict[str, Any], entry: dict[str, Any], file: Path) -> bool:
    """True when ``file`` is what this entry would write: same source bytes, crop, and unchanged output."""
    if any(prev.get(k) != v for k, v in entry.items()):
        return False
    return prev.get("output_sha256") is not None and _file_sha256(file) == prev["output_sha256"]


def _write_square(photo: Photo, dest: Path, resolution: int) -> str:
    """Decode the photo just large enough for its crop, crop, resize and write a PNG atomically."""
    from PIL import Image

    try:
        opened = open_photo(photo.source)
    except UnreadablePhoto as exc:
        raise PhotoSetError(f"{photo.source} could not be read again: {exc.reason}") from exc
    try:
        if opened.sha256 != photo.sha256:
            raise PhotoSetError(f"{photo.source} changed since it was checked; check the photos again.")
        try:
            img, box = opened.decode_region(photo.crop_box.as_tuple(), resolution)
        except UnreadablePhoto as exc:
            raise PhotoSetError(f"{photo.source} could not be decoded: {exc.reason}") from exc
        square = img.resize((resolution, resolution), Image.Resampling.LANCZOS, box=box,
                            reducing_gap=None if box[2] - box[0] < 3 * resolution else 2.0)
        img.close()
    finally:
        opened.close()
    with atomic_path(dest) as tmp:
        # Deflate level 1 with Huffman coding only (no LZ77 string matching): after PNG's row filters a
        # photo has few repeated strings, so this is both faster and smaller than plain level 1.
        square.save(tmp, format="PNG", compress_level=1, compress_type=zlib.Z_HUFFMAN_ONLY)
    return hashlib.sha256(dest.read_bytes()).hexdigest()
