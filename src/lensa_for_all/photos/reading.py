"""Reading one photo safely: sniff the content, refuse bombs from the header, decode small, normalise.

Everything here works on one file at a time and never writes anything. Reading goes through
:func:`open_photo`, which returns either an :class:`OpenedPhoto` (header read, pixels not decoded yet)
or raises :class:`UnreadablePhoto` carrying a reason a user understands.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "MAX_FILE_BYTES",
    "NEUTRAL_BACKGROUND",
    "OpenedPhoto",
    "UnreadablePhoto",
    "open_photo",
    "sniff",
    "to_rgb8",
]

DEFAULT_MAX_PIXELS = 128_000_000
"""Largest image accepted, in pixels (a 108 MP phone photo fits); larger ones are treated as bombs."""

MAX_FILE_BYTES = 256 * 1024**2
"""Largest file read, in bytes: far above any camera's JPEG or HEIC, far below a video."""

NEUTRAL_BACKGROUND = (128, 128, 128)
"""Colour transparent pixels are composited on: mid grey biases the model towards no background colour."""

# Pillow format names per sniffed kind: Image.open is told which decoder to use, so a file is read
# as what its bytes say it is, never as what its extension claims.
_PILLOW_FORMATS = {
    "jpeg": ("JPEG",),  # MPO (multi-picture) files open through the JPEG plugin
    "png": ("PNG",),
    "gif": ("GIF",),
    "webp": ("WEBP",),
    "tiff": ("TIFF",),
    "bmp": ("BMP",),
    "heif": ("HEIF",),
    "avif": ("AVIF",),
}
_AVIF_BRANDS = {b"avif", b"avis"}
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}
_EXIF_ORIENTATION = 0x0112
# EXIF orientation -> the Pillow transpose that makes the photo upright (as ImageOps.exif_transpose).
_TRANSPOSE = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE",
              6: "ROTATE_270", 7: "TRANSVERSE", 8: "ROTATE_90"}


class UnreadablePhoto(Exception):
    """A file that cannot be used as a photo; ``code`` is machine-readable, ``reason`` is for people."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def sniff(head: bytes) -> str:
    """Return the image kind the first bytes say (``"jpeg"``, ``"png"``, ...) or raise UnreadablePhoto."""
    if not head:
        raise UnreadablePhoto("empty", "The file is empty (0 bytes).")
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:2] == b"BM":
        return "bmp"
    if head[4:8] == b"ftyp":
        major = head[8:12]
        brands = {major} | {head[i : i + 4] for i in range(16, min(len(head), 64), 4)}
        if major in _AVIF_BRANDS:
            return "avif"
        if brands & _HEIF_BRANDS:
            return "heif"
        if brands & _AVIF_BRANDS:
            return "avif"
        raise UnreadablePhoto("not_image", "This is a video or other ISO media file, not a photo.")
    if head.startswith(b"%PDF"):
        raise UnreadablePhoto("not_image", "This is a PDF document, not a photo; export its pages as JPEG or PNG.")
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<svg", b"<?xml")) and b"<svg" in head.lower():
        raise UnreadablePhoto("not_image", "This is an SVG vector drawing, not a photo; export it as PNG or JPEG.")
    if b"\x00" not in head:
        try:
            head.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            raise UnreadablePhoto("not_image", "This is a text file, not a photo.")
    raise UnreadablePhoto("not_image", "This file is not an image in a supported format "
                          "(JPEG, PNG, WebP, TIFF, BMP, GIF, HEIC, AVIF).")


def _register_heif() -> None:
    """Teach Pillow HEIC/HEIF; without pillow-heif the one photo is skipped, with the way to fix it."""
    try:
        import pillow_heif
    except ImportError as exc:
        raise UnreadablePhoto("unsupported", "This is a HEIC/HEIF photo (an iPhone's default) and pillow-heif is "
                              "not installed; run `pip install pillow-heif`, or export the photo as JPEG.") from exc
    pillow_heif.register_heif_opener()


@attrs.define
class OpenedPhoto:
    """A photo whose header has been read and checked; pixels are decoded only by :meth:`decode`."""

    data: bytes
    kind: str
    image: Image.Image
    sha256: str

    @property
    def raw_size(self) -> tuple[int, int]:
        """Size as stored, before EXIF orientation."""
        return self.image.size

    @property
    def orientation(self) -> int:
        try:
            return int(self.image.getexif().get(_EXIF_ORIENTATION, 1) or 1)
        except Exception:  # a broken EXIF block is not a reason to lose the photo
            return 1

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) as the photo is meant to be seen, after EXIF orientation."""
        w, h = self.raw_size
        return (h, w) if self.orientation in (5, 6, 7, 8) else (w, h)

    def decode(self, min_short_side: int | None = None, *, gray: bool = False) -> Image.Image:
        """Decode to 8-bit RGB (or 8-bit grayscale with ``gray``), upright.

        JPEGs are decoded at the smallest DCT scale whose short side is still at least
        ``min_short_side`` (Pillow's draft mode), which skips most of the work; with ``gray`` only
        their luma is decoded. A photo can be decoded once.
        """
        im = self.image
        if self.kind == "jpeg" and (min_short_side is not None or gray):
            im.draft("L" if gray else None, _draft_request(im.size, min_short_side))
        return self._load(im, gray=gray)

    def decode_region(self, box: tuple[int, int, int, int], side: int) -> tuple[Image.Image,
                                                                              tuple[float, float, float, float]]:
        """Decode (8-bit RGB, upright) just enough to resample ``box`` to ``side`` pixels; also return
        where ``box`` (upright pixels of the full photo) lies in the decoded image.

        A JPEG is decoded at the smallest DCT scale that keeps ``box`` at least ``side`` pixels wide,
        as :meth:`decode` does, and only down to the last stored row the box needs (plus room for the
        resampling filter): its header's height is lowered in a copy of the bytes, so libjpeg stops
        there. Entropy decoding, which no DCT scale skips, is then paid only for the rows above that
        edge. The pixels it gives are the same as a full decode's.
        """
        w, h = self.size
        left, top, right, bottom = box
        need = math.ceil(side * min(w, h) / max(1, right - left))
        im, start, whole = self.image, (0, 0), None
        if self.kind == "jpeg":
            request = _draft_request(im.size, need)
            scale = _draft_scale(im.size, request)
            cut = _cut_rows(self, box, scale, side)
            if cut is not None:
                im, start, whole = cut
            else:
                im.draft(None, request)
        out = self._load(im, gray=False)
        # The photo's pixels map to decoded ones by the whole decoded size over the photo's (per axis:
        # a DCT-scaled size is rounded up), less where a decoded part starts.
        fw, fh = whole or out.size
        fx, fy = fw / w, fh / h
        sx, sy = start
        return out, (max(0.0, left * fx - sx), max(0.0, top * fy - sy),
                     min(float(out.width), right * fx - sx), min(float(out.height), bottom * fy - sy))

    def _load(self, im: Image.Image, *, gray: bool) -> Image.Image:
        from PIL import Image

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im.load()
        except Image.DecompressionBombError as exc:  # pragma: no cover - header check runs first
            raise UnreadablePhoto("bomb", _bomb_reason(im.size)) from exc
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            msg = str(exc).lower()
            if "truncated" in msg or isinstance(exc, EOFError):
                raise UnreadablePhoto("truncated", "The file is truncated (only part of the photo was "
                                      "saved or copied); copy it again from the original.") from exc
            raise UnreadablePhoto("corrupt", f"The image data is corrupt and cannot be decoded ({exc}).") from exc
        if gray:
            out = im if im.mode == "L" and "transparency" not in im.info else to_rgb8(im).convert("L")
        else:
            out = to_rgb8(im)
        method = _TRANSPOSE.get(self.orientation)
        return out if method is None else out.transpose(getattr(Image.Transpose, method))

    def close(self) -> None:
        self.image.close()


def _draft_request(size: tuple[int, int], min_short_side: int | None) -> tuple[int, int]:
    """The size to ask Pillow's JPEG draft mode for so the short side stays at least ``min_short_side``."""
    w, h = size
    f = 1.0 if min_short_side is None else min(1.0, min_short_side / min(w, h))
    return (max(1, math.ceil(w * f)), max(1, math.ceil(h * f)))


def _draft_scale(size: tuple[int, int], request: tuple[int, int]) -> int:
    """The DCT scale denominator (1, 2, 4 or 8) Pillow's draft mode picks for ``request`` (its rule)."""
    ratio = min(size[0] // request[0], size[1] // request[1])
    return next(s for s in (8, 4, 2, 1) if ratio >= s or s == 1)


# Huffman-coded sequential and progressive JPEGs: libjpeg skips their entropy data past a lowered height.
_CUTTABLE_SOF = {0xC0, 0xC1, 0xC2}


def _sof_height_offset(data: bytes) -> int | None:
    """Offset of the image height in a JPEG's frame header (SOFn), or None if it is not a plain one."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return i + 5 if marker in _CUTTABLE_SOF and i + 9 <= len(data) else None
        if marker in (0xDA, 0xD9):  # scan or end before any frame header
            return None
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def _cut_rows(photo: OpenedPhoto, box: tuple[int, int, int, int], scale: int,
              side: int) -> tuple[Image.Image, tuple[int, int], tuple[int, int]] | None:
    """Open a copy of a JPEG whose header claims only the stored rows ``box`` needs, drafted to
    ``scale``; also return where that part starts in the whole photo decoded upright, and that size.

    None when the whole image is needed or cutting is not safe (an unusual frame header, a height
    defined later in the file, a draft that would not give exactly the expected size).
    """
    from PIL import Image

    raw_w, raw_h = photo.raw_size
    w, h = photo.size
    left, top, right, bottom = box
    orientation = photo.orientation
    # How far down the stored image the box reaches: upright rows or columns, maybe counted from the
    # other edge, depending on the EXIF orientation.
    far = {1: bottom, 2: bottom, 3: h - top, 4: h - top, 5: right, 8: right, 6: w - left, 7: w - left}.get(
        orientation, raw_h)
    # Room past the box: the resampling filter reaches ~3 source pixels per output pixel of reduction
    # beyond its edge, chroma upsampling a row or two; rounded up to whole MCU rows.
    reduction = max(1.0, (right - left) / scale / side)
    margin = scale * (math.ceil(3 * reduction) + 4)
    layers = getattr(photo.image, "layer", None) or []
    mcu = 8 * max((int(layer[2]) for layer in layers), default=4)
    rows = math.ceil((far + margin) / mcu) * mcu
    if rows >= raw_h:
        return None
    offset = _sof_height_offset(photo.data)
    if offset is None or int.from_bytes(photo.data[offset : offset + 2], "big") != raw_h:
        return None
    data = bytearray(photo.data)
    data[offset : offset + 2] = rows.to_bytes(2, "big")
    try:
        im = Image.open(io.BytesIO(bytes(data)), formats=_PILLOW_FORMATS["jpeg"])
        # These sizes make Pillow's rule pick exactly ``scale`` (rows is a multiple of it).
        im.draft(None, (raw_w // scale, rows // scale))
    except Exception:  # pragma: no cover - its header was read once already; decode the whole photo
        return None
    whole_raw = (math.ceil(raw_w / scale), math.ceil(raw_h / scale))
    if im.size != (whole_raw[0], rows // scale):  # pragma: no cover - another Pillow rule
        im.close()
        return None
    # The decoded part, upright, is the top (or left, bottom, right) of the whole decoded photo.
    skipped = whole_raw[1] - rows // scale
    transposed = orientation in (5, 6, 7, 8)
    whole = (whole_raw[1], whole_raw[0]) if transposed else whole_raw
    start = {3: (0, skipped), 4: (0, skipped), 6: (skipped, 0), 7: (skipped, 0)}.get(orientation, (0, 0))
    return im, start, whole


def to_rgb8(im: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB: alpha composited on :data:`NEUTRAL_BACKGROUND`, 16-bit scaled down."""
    from PIL import Image

    icc = im.info.get("icc_profile")
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        import numpy as np

        arr = np.asarray(im, dtype=np.float64)
        if im.mode == "F":
            lo, hi = float(arr.min()), float(arr.max())
            arr = (arr - lo) / (hi - lo or 1.0) * 255.0
        elif im.mode.startswith("I;16") or arr.max() > 255:
            arr = arr / 257.0
        return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), ).convert("RGB")
    if im.mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
    elif im.mode == "PA":
        im = im.convert("RGBA")
    elif im.mode in ("L", "1") and "transparency" in im.info:
        im = im.convert("LA")
    if im.mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (*NEUTRAL_BACKGROUND, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    if icc and im.mode in ("RGB", "CMYK"):
        converted = _to_srgb(im, icc)
        if converted is not None:
            return converted
    return im if im.mode == "RGB" else im.convert("RGB")


def _to_srgb(im: Image.Image, icc: bytes) -> Image.Image | None:
    """Convert through the embedded colour profile (Display P3 phone photos, CMYK prints) to sRGB."""
    try:
        from PIL import ImageCms

        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        dst = ImageCms.createProfile("sRGB")
        out = ImageCms.profileToProfile(im, src, dst, outputMode="RGB")
    except Exception:  # no littlecms or a broken profile: plain conversion is still a fine photo
        return None
    return out


def _bomb_reason(size: tuple[int, int]) -> str:
    w, h = size
    return (f"The image claims to be {w} x {h} pixels ({w * h / 1e6:.0f} MP), more than this library "
            "decodes; it looks like a decompression bomb. Use a normal photo (or raise max_pixels if it is real).")


def open_photo(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> OpenedPhoto:
    """Read ``path`` into memory, sniff its format, open its header and refuse bombs; decode nothing."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with open(path, "rb") as fh:
            kind = sniff(fh.read(64))  # before reading the rest: a video named .jpg is not read whole
            size = os.fstat(fh.fileno()).st_size
            if size > MAX_FILE_BYTES:
                raise UnreadablePhoto("too_large", f"The file is {size / 1e6:.0f} MB, larger than any photo "
                                      f"this library reads ({MAX_FILE_BYTES / 1e6:.0f} MB).")
            fh.seek(0)
            data = fh.read()
    except OSError as exc:
        raise UnreadablePhoto("unreadable", f"The file cannot be read ({exc.strerror or exc}).") from exc
    if kind == "heif":
        _register_heif()
    if kind == "avif":
        from PIL import features

        if not features.check("avif"):
            raise UnreadablePhoto("unsupported", "This Pillow has no AVIF support; save the photo as JPEG "
                                  "or PNG (or install a Pillow built with libavif).")
    Image.init()  # load every format plugin, so ``formats=`` below finds TIFF, WebP and MPO
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=_PILLOW_FORMATS[kind])
    except Image.DecompressionBombError as exc:
        raise UnreadablePhoto("bomb", "The image is far larger than any photo (Pillow refused it as a "
                              "decompression bomb); use a normal photo.") from exc
    except UnidentifiedImageError as exc:
        raise UnreadablePhoto("corrupt", f"The file starts like a {kind.upper()} image but its header is "
                              "corrupt; export the photo again.") from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as exc:
        code = "truncated" if len(data) < 128 else "corrupt"
        raise UnreadablePhoto(code, f"The {kind.upper()} header cannot be read ({exc}); the file is "
                              f"{'truncated' if code == 'truncated' else 'corrupt'}.") from exc
    w, h = im.size
    if w <= 0 or h <= 0:
        im.close()
        raise UnreadablePhoto("corrupt", "The image header says it has no pixels.")
    if w * h > max_pixels:
        im.close()
        raise UnreadablePhoto("bomb", _bomb_reason((w, h)))
    return OpenedPhoto(data=data, kind=kind, image=im, sha256=hashlib.sha256(data).hexdigest())
