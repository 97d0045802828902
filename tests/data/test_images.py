"""Tests for the safe image decoder ``vitkit.data.images.load_image``."""

from __future__ import annotations

import io
import logging
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from vitkit.data import ImageDecodeError, load_image
from vitkit.data.images import to_rgb

logger = logging.getLogger(__name__)

RED = (255, 0, 0)
WHITE = (255, 255, 255)


def _close(a: tuple[int, ...], b: tuple[int, ...], tol: int) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_with_header(width: int, height: int) -> bytes:
    """A well-formed PNG header claiming ``width x height`` RGB pixels, with a tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _noise_rgb(width: int = 64, height: int = 48) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


# --- orientation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "orientation", "expected_corner"),
    [
        # Orientation 6: rotate 90 deg clockwise to display -> stored top-left ends top-right.
        ("PNG", 6, "top_right"),
        ("JPEG", 6, "top_right"),
        # Orientation 8: rotate 90 deg counter-clockwise -> stored top-left ends bottom-left.
        ("PNG", 8, "bottom_left"),
        ("JPEG", 8, "bottom_left"),
    ],
)
def test_exif_orientation_is_applied(
    tmp_path: Path, fmt: str, orientation: int, expected_corner: str
) -> None:
    stored = Image.new("RGB", (40, 20), (0, 0, 255))
    stored.paste(RED, (0, 0, 8, 8))  # mark the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"oriented.{fmt.lower()}"
    stored.save(path, fmt, exif=exif)

    img = load_image(path)

    assert img.size == (20, 40)  # width and height swapped
    w, h = img.size
    corners = {
        "top_left": (1, 1),
        "top_right": (w - 2, 1),
        "bottom_left": (1, h - 2),
        "bottom_right": (w - 2, h - 2),
    }
    for corner, xy in corners.items():
        is_red = _close(img.getpixel(xy), RED, 40)
        assert is_red == (corner == expected_corner), (corner, img.getpixel(xy))


# --- mode conversion -------------------------------------------------------------------------


def test_grayscale_becomes_rgb(tmp_path: Path) -> None:
    path = tmp_path / "gray.png"
    Image.new("L", (5, 4), 77).save(path)
    img = load_image(path)
    assert img.mode == "RGB"
    assert img.size == (5, 4)
    assert img.getpixel((2, 2)) == (77, 77, 77)


def test_la_is_composited_over_white(tmp_path: Path) -> None:
    arr = np.zeros((1, 3, 2), dtype=np.uint8)  # luminance 0 everywhere
    arr[0, :, 1] = [0, 255, 128]  # alpha: transparent, opaque, half
    path = tmp_path / "la.png"
    Image.fromarray(arr, "LA").save(path)
    img = load_image(path)
    assert img.getpixel((0, 0)) == WHITE
    assert img.getpixel((1, 0)) == (0, 0, 0)
    assert _close(img.getpixel((2, 0)), (127, 127, 127), 1)


def test_one_bit_image(tmp_path: Path) -> None:
    src = Image.new("1", (4, 2), 0)
    src.putpixel((3, 1), 1)
    path = tmp_path / "bits.png"
    src.save(path)
    img = load_image(path)
    assert img.mode == "RGB"
    assert img.getpixel((0, 0)) == (0, 0, 0)
    assert img.getpixel((3, 1)) == WHITE


def test_palette_with_transparency_is_composited_over_white(tmp_path: Path) -> None:
    src = Image.new("P", (2, 1))
    src.putpalette([255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    src.putpixel((0, 0), 0)  # red, opaque
    src.putpixel((1, 0), 1)  # blue, but palette index 1 is transparent
    path = tmp_path / "palette.png"
    src.save(path, transparency=1)
    img = load_image(path)
    assert img.getpixel((0, 0)) == RED
    assert img.getpixel((1, 0)) == WHITE


def test_palette_without_transparency(tmp_path: Path) -> None:
    src = Image.new("P", (2, 1))
    src.putpalette([255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    src.putpixel((1, 0), 1)
    path = tmp_path / "palette.gif"
    src.save(path)
    img = load_image(path)
    assert img.getpixel((0, 0)) == RED
    assert img.getpixel((1, 0)) == (0, 0, 255)


def test_rgba_is_composited_over_white(tmp_path: Path) -> None:
    arr = np.array([[[0, 0, 0, 0], [255, 0, 0, 255], [0, 0, 0, 128]]], dtype=np.uint8)
    path = tmp_path / "rgba.png"
    Image.fromarray(arr, "RGBA").save(path)
    img = load_image(path)
    assert img.getpixel((0, 0)) == WHITE  # fully transparent (black underneath) -> white
    assert img.getpixel((1, 0)) == RED  # opaque red stays red
    assert _close(img.getpixel((2, 0)), (127, 127, 127), 1)  # half-transparent black -> mid gray


def test_cmyk_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (255, 0, 0, 0)).save(path, quality=95)  # pure cyan
    img = load_image(path)
    assert img.mode == "RGB"
    assert _close(img.getpixel((8, 8)), (0, 255, 255), 8), img.getpixel((8, 8))


def test_16bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    path = tmp_path / "gray16.png"
    Image.fromarray(np.array([[0, 32768, 65535, 257]], dtype=np.uint16)).save(path)
    with Image.open(path) as raw:
        assert raw.mode.startswith("I")  # really a 16-bit image
    img = load_image(path)
    assert [img.getpixel((x, 0))[0] for x in range(4)] == [0, 128, 255, 1]


def test_16bit_big_endian_tiff(tmp_path: Path) -> None:
    data = np.array([[0, 32768, 65535]], dtype=">u2").tobytes()
    path = tmp_path / "gray16be.tif"
    Image.frombytes("I;16B", (3, 1), data).save(path)
    img = load_image(path)
    assert [img.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_float_and_int32_modes() -> None:
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert [to_rgb(unit).getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]
    byte_range = Image.fromarray(np.array([[0.0, 100.0, 300.0, np.nan]], dtype=np.float32))
    assert [to_rgb(byte_range).getpixel((x, 0))[0] for x in range(4)] == [0, 100, 255, 0]
    int32 = Image.fromarray(np.array([[0, 65535]], dtype=np.int32))
    assert [to_rgb(int32).getpixel((x, 0))[0] for x in range(2)] == [0, 255]


@pytest.mark.parametrize("mode", ["YCbCr", "HSV", "LAB"])
def test_other_colour_spaces_use_pil_convert(mode: str) -> None:
    src = Image.new("RGB", (2, 2), (200, 30, 40)).convert(mode)
    assert to_rgb(src).mode == "RGB"
    assert to_rgb(src).getpixel((0, 0)) == src.convert("RGB").getpixel((0, 0))


# --- sources -------------------------------------------------------------------------------


def test_bytes_and_file_object_sources(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (3, 2), RED).save(buf, "PNG")
    assert load_image(buf.getvalue()).getpixel((0, 0)) == RED
    buf.seek(0)
    assert load_image(buf).getpixel((2, 1)) == RED
    assert not buf.closed  # the caller's handle is theirs to close


# --- failures ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file(tmp_path: Path, fmt: str) -> None:
    buf = io.BytesIO()
    _noise_rgb().save(buf, fmt)
    path = tmp_path / f"truncated.{fmt.lower()}"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageDecodeError, match="truncated") as info:
        load_image(path)
    assert path.name in str(info.value)
    logger.info("truncated %s: %s", fmt, info.value)


def test_corrupt_bytes(tmp_path: Path) -> None:
    buf = io.BytesIO()
    _noise_rgb().save(buf, "PNG")
    data = bytearray(buf.getvalue())
    for i in range(60, 200):  # inside the IDAT chunk: breaks its CRC and the zlib stream
        data[i] ^= 0xFF
    path = tmp_path / "corrupt.png"
    path.write_bytes(bytes(data))
    with pytest.raises(ImageDecodeError) as info:
        load_image(path)
    assert "corrupt.png" in str(info.value)


def test_garbage_after_png_signature(tmp_path: Path) -> None:
    path = tmp_path / "garbage.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + np.random.default_rng(1).bytes(200))
    with pytest.raises(ImageDecodeError, match="garbage.png"):
        load_image(path)


def test_text_file_with_image_extension(tmp_path: Path) -> None:
    path = tmp_path / "not_an_image.jpg"
    path.write_text("hello, I am a text file\n")
    with pytest.raises(ImageDecodeError, match="not_an_image.jpg.*not an image"):
        load_image(path)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.png"
    with pytest.raises(ImageDecodeError, match="missing.png.*does not exist"):
        load_image(path)


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError, match="directory"):
        load_image(tmp_path)


def test_bomb_small_limit_on_normal_image(tmp_path: Path) -> None:
    path = tmp_path / "normal.png"
    _noise_rgb(64, 48).save(path)
    with pytest.raises(ImageDecodeError, match=r"normal.png.*decompression bomb.*limit of 1,000 pixels"):
        load_image(path, max_pixels=1000)
    assert load_image(path, max_pixels=64 * 48).size == (64, 48)  # the limit is inclusive


def test_bomb_header_checked_before_decoding(tmp_path: Path) -> None:
    # 12000 x 12000 = 144 Mpx: above PIL's warning threshold, below PIL's hard limit, so only
    # our check stops it -- before ~432 MB of pixels would be allocated.
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_with_header(12_000, 12_000))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning may escape either
        with pytest.raises(ImageDecodeError, match=r"bomb.png.*12000x12000"):
            load_image(path, max_pixels=100_000_000)


def test_bomb_header_refused_by_pil_is_converted(tmp_path: Path) -> None:
    path = tmp_path / "huge.png"
    path.write_bytes(_png_with_header(100_000, 100_000))  # 10 Gpx: PIL itself raises
    with pytest.raises(ImageDecodeError, match=r"huge.png.*decompression bomb"):
        load_image(path, max_pixels=10**11)  # even with a generous limit of our own
    with pytest.raises(ImageDecodeError, match=r"huge.png.*decompression bomb"):
        load_image(path)


def test_bad_max_pixels_argument(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_pixels"):
        load_image(tmp_path / "x.png", max_pixels=0)


def test_pil_globals_unchanged_and_no_fd_leak(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    _noise_rgb().save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(good.read_bytes()[:100])
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    fd_dir = Path("/proc/self/fd")
    fds_before = len(os.listdir(fd_dir)) if fd_dir.is_dir() else None
    for _ in range(5):
        load_image(good)
        with pytest.raises(ImageDecodeError):
            load_image(bad)
    assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES) == before
    if fds_before is not None:
        assert len(os.listdir(fd_dir)) == fds_before
