"""The HTML report: one self-contained file, escaped text, valid embedded PNGs, atomic write."""

from __future__ import annotations

import base64
import io
import re
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pytest
from PIL import Image

from vitkit import __version__
from vitkit.report import (
    Report,
    Section,
    png_data_uri,
    protocol_section,
    samples_section,
    summary_section,
    training_section,
)
from vitkit.report.plots import bar_plot, confusion_plot, image_grid, line_plot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EVIL = "<script>alert(1)</script>"


@dataclass
class Result:
    accuracy: float
    per_class: dict[str, float]
    confusion: np.ndarray
    class_names: list[str]


def _result(names: list[str], seed: int) -> Result:
    rng = np.random.default_rng(seed)
    conf = rng.integers(0, 5, size=(len(names), len(names))) + 10 * np.eye(len(names), dtype=int)
    per = {n: float(conf[i, i] / conf[i].sum()) for i, n in enumerate(names)}
    return Result(float(np.trace(conf) / conf.sum()), per, conf, names)


def _decode_png(data: bytes) -> Image.Image:
    assert data.startswith(PNG_MAGIC)
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def _full_report() -> Report:
    names = ["Arial", "Times $New$ Roman", EVIL]
    history = [{"step": s, "epoch": s / 10, "loss": 2.0 / s, "lr": 1e-3, "images_per_s": 100.0}
               for s in range(1, 11)]
    history += [{"step": 5, "epoch": 0.5, "val_accuracy": 0.4}, {"step": 10, "epoch": 1.0, "val_accuracy": 0.6}]
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (24, 40, 3), dtype=np.uint8)) for _ in range(4)]
    report = Report(f"Run {EVIL}")
    report.add(summary_section({"frb": {"easy": {"accuracy": 0.25}, "hard": {"accuracy": 0.125}}, "n": 3},
                               notes=[f"note {EVIL}"]))
    report.add(training_section(history))
    report.add(protocol_section("FRB", {"easy": _result(names, 0), "hard": _result(names, 1)}))
    report.add(samples_section("Samples", images, ["a", "b", EVIL, "d"], ["a", "x", EVIL, "d"], ncols=2))
    return report


def test_full_report_is_one_self_contained_file(tmp_path):
    report = _full_report()
    out = report.write(tmp_path / "sub" / "report.html")
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.html"]  # no temp file left
    text = out.read_text(encoding="utf-8")

    assert 'src="http' not in text and "<link" not in text and "<script" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text  # in title, note, sample caption
    assert "Content-Security-Policy" in text
    assert f"vitkit {__version__}" in text and re.search(r"Generated \d{4}-\d\d-\d\d", text)

    nav = text.split("<nav>")[1].split("</nav>")[0]
    for s in report.sections:
        assert f'href="#{s.id}"' in nav
        assert f'<section id="{s.id}">' in text
    assert [s.id for s in report.sections] == ["summary", "training", "frb", "samples"]

    srcs = re.findall(r'src="([^"]*)"', text)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    # 2 training plots, 1 bar plot, 2 confusion matrices, 4 thumbnails
    assert len(srcs) == 9
    for s in srcs:
        img = _decode_png(base64.b64decode(s.split(",", 1)[1], validate=True))
        assert img.width > 0 and img.height > 0


def test_summary_flattens_and_formats():
    html = summary_section({"frb": {"easy": {"accuracy": 0.2467}}, "ok": True, "n": 150}).html
    assert "frb/easy/accuracy" in html and "0.2467" in html and "150" in html and "True" in html


def test_training_section_without_eval_or_loss():
    html = training_section([{"step": 1, "loss": 1.0, "lr": 0.1}]).html
    assert html.count("<img") == 1 and "Evaluation" not in html
    assert "No training records" in training_section([]).html


def test_samples_section_colours():
    imgs = [Image.new("L", (10, 10)), Image.new("RGBA", (30, 10))]
    html = samples_section("Easy samples", imgs, ["a", "b"], ["a", "c"]).html
    assert "1 of 2 correct" in html
    assert "#1a7f37" in html and "#cf222e" in html
    assert samples_section("Easy samples", imgs, ["a", "b"], ["a", "c"]).id == "easy-samples"
    with pytest.raises(ValueError, match="equally many"):
        samples_section("x", imgs, ["a"], ["a", "b"])


def test_line_plot_and_confusion_plot_are_png():
    png = line_plot({"train": ([0, 1, 2], [3.0, 2.0, 1.0]), "val $x$": ([0, 2], [2.5, 1.5])}, "step", "loss", "t")
    assert _decode_png(png).width > 100
    conf = np.array([[5, 1, 0], [0, 0, 0], [2, 2, 6]])
    assert _decode_png(confusion_plot(conf, ["a", "$b", EVIL], "cm")).height > 100
    big = np.random.default_rng(0).integers(0, 3, size=(30, 30))
    _decode_png(confusion_plot(big, [f"c{i}" for i in range(30)]))
    _decode_png(bar_plot({"easy": {"a": 0.5, "b": 0.2}, "hard": {"a": 0.1, "c": 0.9}}, "t", "acc"))
    with pytest.raises(ValueError, match="square"):
        confusion_plot(np.zeros((2, 3)), ["a", "b"])
    with pytest.raises(ValueError, match="labels"):
        confusion_plot(np.zeros((2, 2)), ["a"])


def test_image_grid_and_data_uri():
    grid = image_grid([Image.new("RGB", (64, 32))], ["cap <b>"], ncols=3, thumb_width=32)
    assert 'width="32" height="16"' in grid and "cap &lt;b&gt;" in grid and "repeat(3," in grid
    with pytest.raises(ValueError, match="colour"):
        image_grid([Image.new("RGB", (4, 4))], ["x"], caption_colors=["red;background:url(x)"])
    uri = png_data_uri(Image.new("RGB", (3, 2)))
    assert _decode_png(base64.b64decode(uri.split(",", 1)[1])).size == (3, 2)
    assert png_data_uri(uri) == uri
    with pytest.raises(ValueError):
        png_data_uri(b"not a png")


def test_png_data_uri_from_figure():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 1))
    fig.add_subplot().plot([0, 1], [1, 0])
    uri = png_data_uri(fig)
    assert _decode_png(base64.b64decode(uri.split(",", 1)[1])).size == (200, 100)


def test_section_ids_validated_and_unique():
    with pytest.raises(ValueError, match="section id"):
        Section('x" onload="y', "t", "")
    report = Report("r").add(Section("a", "A", ""))
    with pytest.raises(ValueError, match="already has"):
        report.add(Section("a", "again", ""))


def test_render_is_deterministic_given_time():
    report = Report("r").add(summary_section({"a": 1}))
    now = datetime(2025, 1, 2, 3, 4, tzinfo=UTC)
    assert report.render(now=now) == report.render(now=now)
    assert "2025-01-02 03:04 UTC" in report.render(now=now)


def test_atomic_write_replaces_and_cleans_up(tmp_path, monkeypatch):
    path = tmp_path / "r.html"
    path.write_text("old")
    report = Report("r").add(summary_section({"a": 1}))

    import vitkit.report.html as mod

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(mod.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        report.write(path)
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]
    monkeypatch.undo()
    report.write(path)
    assert "<!DOCTYPE html>" in path.read_text() and sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]
