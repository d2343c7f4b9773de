"""Builders for the hostile photo corpus used by tests/test_photos*.py."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from lensa_for_all.testing.photos import make_photos

# The astronaut's face in skimage's 512x512 portrait, judged by eye (left, top, right, bottom).
ASTRONAUT_FACE = (180, 60, 270, 165)


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under root (links not followed), to prove nothing was changed."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            out[str(p.relative_to(root))] = "link" if p.is_symlink() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature + IHDR claiming ``width x height`` and a tiny IDAT: a decompression bomb header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + \
        chunk(b"IEND", b"")


def jpeg_bytes(im: Image.Image, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90, **kw)
    return buf.getvalue()


def build_corpus(root: Path, outside: Path) -> dict[str, str]:
    """Write the hostile corpus into ``root``; return {file name: expected status or rejection code}."""
    src = make_photos(outside / "made", 14, size=(480, 600), seed=7)
    ims = [Image.open(p).convert("RGB") for p in src]
    root.mkdir(parents=True)
    expect: dict[str, str] = {}

    def put(name: str, data: bytes, outcome: str) -> None:
        (root / name).write_bytes(data)
        expect[name] = outcome

    put("a_good.jpg", src[0].read_bytes(), "accepted")
    buf = io.BytesIO()
    ims[1].save(buf, "PNG")
    put("b_png.png", buf.getvalue(), "accepted")
    buf = io.BytesIO()
    ims[2].save(buf, "WEBP", quality=90)
    put("c_webp_named_jpg.jpg", buf.getvalue(), "accepted")  # read by content, not extension
    buf = io.BytesIO()
    ims[3].save(buf, "TIFF")
    put("d_tiff.tif", buf.getvalue(), "accepted")
    buf = io.BytesIO()
    ims[4].save(buf, "BMP")
    put("e_bmp.bmp", buf.getvalue(), "accepted")
    buf = io.BytesIO()
    frame0 = ims[5].quantize(256)
    red = Image.new("RGB", ims[5].size, (255, 0, 0)).quantize(256)
    frame0.save(buf, "GIF", save_all=True, append_images=[red], duration=100, loop=0)
    put("f_anim.gif", buf.getvalue(), "accepted")
    import pillow_heif

    heif = pillow_heif.from_pillow(ims[6])
    buf = io.BytesIO()
    heif.save(buf, quality=85)
    put("g_phone.heic", buf.getvalue(), "accepted")
    put("h_cmyk.jpg", jpeg_bytes(ims[7].convert("CMYK")), "accepted")
    pal = ims[8].quantize(255)
    arr = np.asarray(pal).copy()
    arr[:40, :] = 255  # a transparent band on top
    pal2 = Image.fromarray(arr).convert("P")
    pal2.putpalette(pal.getpalette())
    buf = io.BytesIO()
    pal2.save(buf, "PNG", transparency=255)
    put("i_palette_alpha.png", buf.getvalue(), "accepted")
    rgba = ims[9].convert("RGBA")
    alpha = Image.new("L", rgba.size, 255)
    alpha.paste(0, (0, 0, rgba.width, 30))
    rgba.putalpha(alpha)
    buf = io.BytesIO()
    rgba.save(buf, "PNG")
    put("j_rgba.png", buf.getvalue(), "accepted")
    g16 = (np.asarray(ims[10].convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(g16).save(buf, "PNG")
    put("k_gray16.png", buf.getvalue(), "accepted")
    put("l_gray.jpg", jpeg_bytes(ims[11].convert("L")), "accepted")
    # Stored sideways with EXIF orientation 6: upright it is 480 x 600.
    exif = Image.Exif()
    exif[0x0112] = 6
    put("m_rotated.jpg", jpeg_bytes(ims[12].transpose(Image.Transpose.ROTATE_90), exif=exif.tobytes()),
        "accepted")

    put("n_empty.jpg", b"", "empty")
    good = src[13].read_bytes()
    put("o_truncated.jpg", good[: len(good) // 2], "truncated")
    put("p_corrupt.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 2, "corrupt")
    put("q_notes.jpg", b"These are my notes, not a photo.\n", "not_image")
    put("r_drawing.svg", b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"></svg>', "not_image")
    put("s_doc.pdf", b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n", "not_image")
    put("t_bomb.png", png_header_only(60_000, 60_000), "bomb")
    put("u_tiny.jpg", jpeg_bytes(ims[13].resize((200, 250))), "too_small")
    put("v_panorama.jpg", jpeg_bytes(ims[13].resize((1600, 400))), "aspect")
    put("w_exact_copy.jpg", src[0].read_bytes(), "duplicate")
    put("x_near_copy.jpg", jpeg_bytes(ims[0].resize((432, 540)), ), "near_duplicate")
    secret = outside / "secret.jpg"
    secret.write_bytes(src[13].read_bytes())
    (root / "y_escape.jpg").symlink_to(secret)
    expect["y_escape.jpg"] = "outside_link"
    (root / "z_broken.jpg").symlink_to(root / "gone.jpg")
    expect["z_broken.jpg"] = "broken_link"

    for junk in (".DS_Store", "._a_good.jpg", "Thumbs.db"):
        put(junk, b"\x00\x05\x16\x07junk", "skipped")
    (root / "sub").mkdir()
    (root / "sub" / "inner.jpg").write_bytes(src[1].read_bytes())
    expect["sub"] = "skipped"
    return expect
