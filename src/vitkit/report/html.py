"""The report container: sections in, ONE self-contained HTML file out.

A :class:`Section` holds ready HTML. Section builders (see :mod:`vitkit.report.sections`) are
responsible for escaping every piece of text that comes from data; the helpers here
(:func:`escape`, :func:`table`, :func:`figure`) do it for them. The written file has inline CSS,
images as base64 PNG data URIs, no scripts and a Content-Security-Policy that forbids loading
anything from outside, so it can be mailed or archived as one file.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import os
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image

__all__ = ["Report", "Section", "escape", "figure", "make_id", "png_data_uri", "table"]

logger = logging.getLogger(__name__)

_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_DATA_URI_PREFIX = "data:image/png;base64,"


def escape(text: Any) -> str:
    """``str(text)`` with ``& < > " '`` escaped for HTML text and attribute values."""
    return html.escape(str(text), quote=True)


def make_id(text: str, prefix: str = "s") -> str:
    """A valid section id from free text: ``"FRB easy/hard"`` -> ``"frb-easy-hard"``."""
    slug = re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")
    if not slug or not slug[0].isalpha():
        slug = f"{prefix}-{slug}".rstrip("-")
    return slug


@dataclass
class Section:
    """One report section: ``id`` (the anchor; letters, digits, ``-``, ``_``), ``title`` (plain
    text, escaped when rendered) and ``html`` (the body, already escaped by its builder)."""

    id: str
    title: str
    html: str

    def __post_init__(self) -> None:
        if not _ID.match(self.id):
            raise ValueError(f"section id {self.id!r} must start with a letter and contain only letters, "
                             "digits, '-' and '_'; make_id() builds one from a title.")


def png_data_uri(obj: Any, *, dpi: int = 100) -> str:
    """A ``data:image/png;base64,...`` URI for a matplotlib ``Figure``, a ``PIL.Image`` or PNG
    bytes. Data URIs pass through unchanged."""
    if isinstance(obj, str):
        if not obj.startswith(_DATA_URI_PREFIX):
            raise ValueError("png_data_uri expects a Figure, a PIL image, PNG bytes or a PNG data URI")
        return obj
    return _DATA_URI_PREFIX + base64.b64encode(_png_bytes(obj, dpi)).decode("ascii")


def _png_bytes(obj: Any, dpi: int) -> bytes:
    if isinstance(obj, bytes | bytearray | memoryview):
        data = bytes(obj)
        if not data.startswith(_PNG_MAGIC):
            raise ValueError("bytes given to png_data_uri are not a PNG file")
        return data
    buf = io.BytesIO()
    if isinstance(obj, Image.Image):
        img = obj if obj.mode in ("RGB", "RGBA", "L", "LA", "P", "1") else obj.convert("RGB")
        img.save(buf, format="PNG", optimize=True)
    elif hasattr(obj, "savefig"):  # matplotlib Figure (matplotlib imported lazily)
        return figure_png(obj, dpi=dpi)
    else:
        raise TypeError(f"png_data_uri expects a Figure, a PIL image or PNG bytes, got {type(obj).__name__}")
    return buf.getvalue()


def figure_png(fig: Any, *, dpi: int = 100) -> bytes:
    """Render a matplotlib ``Figure`` to PNG bytes with the Agg canvas (no timestamp metadata)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


def figure(png: Any, *, caption: str = "", alt: str = "") -> str:
    """An ``<figure>`` with an embedded PNG (bytes, data URI, Figure or PIL image)."""
    cap = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{png_data_uri(png)}" alt="{escape(alt or caption)}">{cap}</figure>'


def table(headers: Sequence[Any], rows: Iterable[Sequence[Any]], *, numeric: bool = True) -> str:
    """An HTML table; every cell is escaped. With ``numeric`` the cells after the first are
    right-aligned."""
    cls = ' class="num"' if numeric else ""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td{cls if i else ''}>{escape(c)}</td>" for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = """
:root { --fg:#1f2328; --muted:#59636e; --line:#d1d9e0; --bg:#fff; --accent:#0969da; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       background: var(--bg); margin: 0 auto; max-width: 1100px; padding: 24px; }
h1 { margin: 0 0 4px; font-size: 26px; } h2 { border-bottom: 1px solid var(--line); padding-bottom: 4px;
     margin-top: 40px; } h3 { margin-bottom: 6px; }
.meta { color: var(--muted); font-size: 13px; }
nav { background: #f6f8fa; border: 1px solid var(--line); border-radius: 6px; padding: 8px 20px;
      margin: 16px 0; } nav ol { margin: 4px 0; padding-left: 20px; }
a { color: var(--accent); text-decoration: none; } a:hover { text-decoration: underline; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 14px; }
th, td { border: 1px solid var(--line); padding: 4px 10px; text-align: left; }
th { background: #f6f8fa; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 12px 0; } figure img { max-width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 13px; }
.grid { display: grid; gap: 10px; margin: 12px 0; }
.grid .cell { text-align: center; font-size: 12px; line-height: 1.3; word-break: break-word; }
.grid img { display: block; margin: 0 auto 4px; border: 1px solid var(--line); image-rendering: auto; }
.note { color: var(--muted); }
footer { margin-top: 48px; color: var(--muted); font-size: 12px; }
"""

# Nothing may be fetched from outside: images only from data: URIs, styles only inline.
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


@dataclass
class Report:
    """An ordered list of sections rendered as one HTML page with a table of contents."""

    title: str
    sections: list[Section] = field(default_factory=list)

    def add(self, section: Section) -> Report:
        """Append ``section`` (its id must be new); returns ``self`` for chaining."""
        if not isinstance(section, Section):
            raise TypeError(f"Report.add expects a Section, got {type(section).__name__}")
        if any(s.id == section.id for s in self.sections):
            raise ValueError(f"the report already has a section with id {section.id!r}")
        self.sections.append(section)
        return self

    def render(self, *, now: datetime | None = None) -> str:
        """The whole HTML document as a string."""
        from vitkit import __version__

        stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
        toc = "".join(f'<li><a href="#{s.id}">{escape(s.title)}</a></li>' for s in self.sections)
        body = "\n".join(
            f'<section id="{s.id}">\n<h2>{escape(s.title)}</h2>\n{s.html}\n</section>' for s in self.sections
        )
        meta = f"Generated {escape(stamp)} by vitkit {escape(__version__)}"
        return (
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<meta name="generator" content="vitkit {escape(__version__)}">\n'
            f"<title>{escape(self.title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            f'<header><h1>{escape(self.title)}</h1><div class="meta">{meta}</div></header>\n'
            f'<nav><strong>Contents</strong><ol>{toc}</ol></nav>\n<main>\n{body}\n</main>\n'
            f"<footer>{meta}</footer>\n</body>\n</html>\n"
        )

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Render and write atomically (temp file in the same folder, then rename). Returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.render().encode("utf-8")
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            # os.open honours the umask, so the report gets the user's usual permissions
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        logger.info("wrote report %s (%d sections, %.1f kB)", path, len(self.sections), len(data) / 1024)
        return path
