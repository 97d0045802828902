"""The one safe image decoder: any supported file -> fully loaded RGB ``PIL.Image``.

Every image that enters vitkit goes through :func:`load_image`. It

* refuses decompression bombs by checking ``width * height`` against a pixel limit *before*
  any pixel data is decoded (``Image.open`` only parses the header);
* applies the EXIF/XMP orientation tag;
* converts every mode to RGB *correctly* (alpha is composited over white, 16-bit and float
  images are rescaled instead of clipped, CMYK/LAB/YCbCr/HSV go through PIL's converters);
* turns every failure (missing file, directory, non-image, corrupt or truncated data, bomb)
  into :class:`ImageDecodeError` naming the file;
* never leaves a file handle open and never changes PIL's global settings.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps

__all__ = ["MAX_IMAGE_PIXELS", "ImageDecodeError", "ImageSource", "load_image", "to_rgb"]

logger = logging.getLogger(__name__)

#: Default limit on ``width * height``. It equals ``2 * PIL.Image.MAX_IMAGE_PIXELS`` with
#: PIL's default setting (PIL's own hard-error threshold), i.e. about 179 megapixels
#: (e.g. 13,377 x 13,377), roughly 512 MiB of RGB pixels. Override per call with
#: ``load_image(..., max_pixels=N)`` or by assigning this module attribute.
MAX_IMAGE_PIXELS: int = 178_956_970

#: Background that transparent pixels are composited over.
_BACKGROUND = (255, 255, 255)
#: Modes with an alpha band (not "LAB", whose "A" band is a colour axis).
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})

ImageSource = str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes]


class ImageDecodeError(ValueError):
    """An image could not be decoded; the message names the file, the problem and a remedy."""

    def __init__(self, source: str, problem: str, remedy: str) -> None:
        self.source = source
        self.problem = problem
        self.remedy = remedy
        super().__init__(f"Cannot load image {source}: {problem}. {remedy}")


def _describe(source: object) -> str:
    """A human-readable name for ``source`` for error messages."""
    if isinstance(source, str | os.PathLike):
        return repr(os.fspath(source))
    if isinstance(source, bytes | bytearray | memoryview):
        return f"<{len(source)} bytes in memory>"
    name = getattr(source, "name", None)
    if isinstance(name, str | bytes):
        return repr(name)
    return f"<{type(source).__name__} object>"


def load_image(source: ImageSource, *, max_pixels: int | None = None) -> Image.Image:
    """Decode ``source`` (path, bytes, or binary file object) into a fully loaded RGB image.

    ``max_pixels`` defaults to :data:`MAX_IMAGE_PIXELS`. Limits above PIL's hard limit
    (``2 * PIL.Image.MAX_IMAGE_PIXELS``) are still refused by PIL, because vitkit does not
    change PIL's global settings. A caller's file object is read but not closed.

    Raises:
        ImageDecodeError: for any file that cannot be decoded safely.
    """
    name = _describe(source)
    limit = MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        raise ValueError(f"max_pixels must be a positive int or None, got {max_pixels!r}")

    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if not path.exists():
            raise ImageDecodeError(name, "the file does not exist", "Check the path and working directory.")
        if path.is_dir():
            raise ImageDecodeError(name, "it is a directory, not a file", "Pass the path of an image file.")
        try:
            with open(path, "rb") as fh:
                return _decode(fh, name, limit)
        except OSError as exc:  # permission denied, I/O error while opening
            raise ImageDecodeError(
                name, f"the file cannot be read ({exc})", "Check its permissions."
            ) from exc
    if isinstance(source, bytes | bytearray | memoryview):
        with io.BytesIO(bytes(source)) as fh:
            return _decode(fh, name, limit)
    if hasattr(source, "read"):
        return _decode(source, name, limit)
    raise TypeError(f"load_image expects a path, bytes or a binary file object, got {type(source).__name__}")


def _decode(fh: IO[bytes], name: str, limit: int) -> Image.Image:
    """Open, size-check, load, orient and convert; ``fh`` stays owned by the caller."""
    try:
        with warnings.catch_warnings():
            # PIL warns above its own (global) MAX_IMAGE_PIXELS while parsing the header. Our
            # explicit check below is authoritative: anything PIL warns about that exceeds
            # ``limit`` is refused there, before decoding; the rest the caller allowed.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(fh) as img:
                width, height = img.size
                if width * height > limit:
                    raise _bomb_error(name, f"{width}x{height} = {width * height:,} pixels", limit)
                img.load()
                oriented = _exif_transpose(img, name)
                return to_rgb(oriented)
    except (ImageDecodeError, MemoryError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # PIL's hard limit (2 * PIL.Image.MAX_IMAGE_PIXELS), or its warning if a filter escalated it.
        raise ImageDecodeError(
            name,
            f"possible decompression bomb, refused by PIL's own global limit ({str(exc).rstrip('.')})",
            "vitkit never changes PIL's global settings; if the file is trusted, raise "
            "PIL.Image.MAX_IMAGE_PIXELS in your program and pass max_pixels= to load_image.",
        ) from exc
    except Image.UnidentifiedImageError as exc:
        raise ImageDecodeError(
            name,
            "it is not an image in any format PIL recognises",
            "Check that it really is an image (not e.g. a text or HTML file with an image extension).",
        ) from exc
    except Exception as exc:  # corrupt data makes PIL plugins raise almost anything
        raise ImageDecodeError(
            name,
            f"the image data is truncated or corrupt ({type(exc).__name__}: {exc})",
            "Re-download or re-export the file.",
        ) from exc


def _bomb_error(name: str, what: str, limit: int) -> ImageDecodeError:
    return ImageDecodeError(
        name,
        f"possible decompression bomb: {what}, more than the limit of {limit:,} pixels",
        "If the file is trusted, pass a larger max_pixels= to load_image "
        "(or set vitkit.data.images.MAX_IMAGE_PIXELS).",
    )


def _exif_transpose(img: Image.Image, name: str) -> Image.Image:
    """Apply the orientation tag; a malformed EXIF block is logged and ignored, not fatal."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception as exc:  # EXIF parsers raise many types on bad metadata
        logger.warning("Ignoring unreadable EXIF orientation of %s: %s", name, exc)
        return img


def to_rgb(img: Image.Image) -> Image.Image:
    """Return a new RGB image converted correctly from any PIL mode.

    * alpha (``RGBA``, ``LA``, ``PA``, premultiplied, palette/``tRNS`` transparency) is
      composited over a white background;
    * 16/32-bit integer modes (``I;16*``, ``I``) are scaled so that 65535 -> 255; an ``I``
      image with values outside ``0..65535`` is min-max scaled to ``0..255``;
    * float ``F`` is taken as ``0..1`` if its maximum is <= 1, else as ``0..255``; it is then
      clipped to ``0..255`` and NaN becomes 0;
    * everything else (``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``...) uses
      ``PIL.Image.convert``.
    """
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        return _integer_to_rgb(img)
    if mode == "F":
        return _float_to_rgb(img)
    if mode in _ALPHA_MODES or img.has_transparency_data:
        rgba = img.convert("RGBA")
        out = Image.new("RGB", rgba.size, _BACKGROUND)
        out.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
        return out
    return img.convert("RGB")


def _integer_to_rgb(img: Image.Image) -> Image.Image:
    values = np.asarray(img).astype(np.float64)
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if img.mode == "I" and (lo < 0 or hi > 65535):
        values = (values - lo) / (hi - lo or 1.0) * 255.0
    else:
        values = values * (255.0 / 65535.0)
    return _gray_u8_to_rgb(values)


def _float_to_rgb(img: Image.Image) -> Image.Image:
    values = np.nan_to_num(np.asarray(img).astype(np.float64), nan=0.0)
    if values.size and float(values.max()) <= 1.0:
        values = values * 255.0
    return _gray_u8_to_rgb(values)


def _gray_u8_to_rgb(values: np.ndarray) -> Image.Image:
    gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")
