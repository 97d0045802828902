"""The command line: exit codes, one-line errors, real output."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

import vitkit
from vitkit import frb
from vitkit.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    model = vitkit.create_model("vit_test", labels=[f"font {i}" for i in range(10)])
    return vitkit.save(model, d / "m")


@pytest.fixture()
def image(tmp_path):
    p = tmp_path / "img.png"
    Image.new("RGB", (50, 30), (10, 200, 30)).save(p)
    return p


def test_models_lists_registry():
    r = runner.invoke(app, ["models"])
    assert r.exit_code == 0
    assert "vit_test" in r.output and "clip_vit_b16" in r.output


def test_info(ckpt):
    r = runner.invoke(app, ["info", str(ckpt)])
    assert r.exit_code == 0, r.output
    assert "parameters" in r.output and "GFLOPs" in r.output and "10 classes" in r.output


def test_predict_topk(ckpt, image):
    r = runner.invoke(app, ["predict", str(ckpt), str(image), "--topk", "3"])
    assert r.exit_code == 0, r.output
    assert sum(f"font {i}" in r.output for i in range(10)) == 3


@pytest.mark.parametrize("content", [b"not an image at all", b"\x89PNG\r\n\x1a\n\x00\x00"])
def test_predict_bad_image_is_one_line_error(ckpt, tmp_path, content):
    bad = tmp_path / "bad.png"
    bad.write_bytes(content)
    r = runner.invoke(app, ["predict", str(ckpt), str(bad)])
    assert r.exit_code == 2
    assert "bad.png" in r.output and "Traceback" not in r.output
    assert r.output.strip().startswith("error:")


def test_missing_checkpoint(image):
    r = runner.invoke(app, ["info", "/no/such/model"])
    assert r.exit_code == 2 and "no such file or directory" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("name", ["run[1]", "run[b]", "run[/b]"])
def test_errors_print_brackets_as_they_are(name):
    """A path or message with [brackets] is printed verbatim (not read as a style tag, not a crash)."""
    r = runner.invoke(app, ["info", f"/no/such/{name}/model"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert f"/no/such/{name}/model" in r.output and r.output.strip().startswith("error:")


def test_progress_descriptions_print_brackets():
    """A progress bar's description (e.g. a user's folder name) is not read as markup."""
    import io

    from rich.console import Console
    from rich.progress import Progress

    from vitkit.progress import progress_bar

    buf = io.StringIO()
    bar = Progress(*progress_bar(True).columns, console=Console(file=buf, force_terminal=True, width=100))
    with bar:
        bar.advance(bar.add_task("checking imgs[/b]", total=2))
        bar.refresh()
    assert "imgs[/b]" in buf.getvalue()


def test_help_keeps_bracketed_text():
    """Every [token] in a command's or option's help (e.g. pip install 'vitkit[federated]') survives --help."""
    import re

    import typer

    tag = re.compile(r"\[[a-zA-Z#/@][^\[\]]*\]")  # what rich markup would take for a style tag

    def walk(cmd, path):
        yield path, cmd
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from walk(sub, [*path, name])

    checked = 0
    for path, cmd in walk(typer.main.get_command(app), []):
        wanted = {m for t in [cmd.help or ""] + [getattr(p, "help", None) or "" for p in cmd.params]
                  for m in tag.findall(t)}
        if wanted:
            shown = " ".join(runner.invoke(app, [*path, "--help"], terminal_width=200).output.split())
            assert {w for w in wanted if w not in shown} == set(), " ".join(path)
            checked += 1
    assert checked  # at least the federated group's help has one


def test_clip_predict_needs_labels(tmp_path, image, tiny_tokenizer):
    clip = vitkit.create_model("clip_test")
    clip.tokenizer = tiny_tokenizer
    d = vitkit.save(clip, tmp_path / "clip")
    r = runner.invoke(app, ["predict", str(d), str(image)])
    assert r.exit_code == 2 and "--labels" in r.output
    r = runner.invoke(app, ["predict", str(d), str(image), "--labels", "cat, dog, bird", "-k", "2"])
    assert r.exit_code == 0, r.output
    assert sum(n in r.output for n in ("cat", "dog", "bird")) == 2


def test_demo_quick_writes_report_and_metrics(tmp_path, monkeypatch):
    from vitkit import demo_sections
    from vitkit.frb.recipe import DemoConfig
    from vitkit.report import Section

    def good(ctx):
        ctx.metrics["extra"] = {"pages": len(ctx.train_pages), "classes": ctx.classifier(ctx.val_pages[:2]).shape[-1]}
        return Section("extra-ok", "Extra section", "<p>added by a later issue</p>")

    def broken(ctx):
        raise RuntimeError("boom in section")

    monkeypatch.setattr(demo_sections, "SECTIONS", [("extra", good), ("broken one", broken)])
    out = tmp_path / "demo"
    r = runner.invoke(app, ["demo", "--quick", "--out", str(out)])
    assert r.exit_code == 0, r.output
    metrics = json.loads((out / "metrics.json").read_text())
    for split, n in (("easy", 150), ("hard", 225)):
        m = metrics["frb"][split]
        assert 0.0 <= m["accuracy"] <= 1.0 and 0.0 <= m["multiple_choice_accuracy"] <= 1.0
        assert set(m["per_font"]) <= set(frb.FONT_NAMES)
        assert len(list((out / "frb" / split).glob("*.jpg"))) == n  # the paper's JPEG files
        assert len(m["predictions"]) == -(-n // 5)  # the quick run scores every 5th page
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "Multiple choice" in html and 'src="http' not in html
    # sections added by later issues: a working one lands in page and metrics, a failing one is reported
    assert "added by a later issue" in html and metrics["extra"] == {"pages": 150, "classes": 15}
    assert "broken one (failed)" in html and "boom in section" in html
    assert (out / "model" / "model.safetensors").is_file()
    # the saved model is a plain vitkit checkpoint that carries its page pipeline
    model = vitkit.load(out / "model")
    assert model.cfg.num_classes == 15 and model.pipeline.tile == 96 and model.cfg.labels == frb.FONT_NAMES
    assert model.pipeline.scales == tuple(DemoConfig().read_scales)  # the demo's readings travel with it
    r = runner.invoke(app, ["info", str(out / "model")])
    assert r.exit_code == 0 and "page pipeline" in r.output and "96-px tiles" in r.output, r.output
    assert "read at 0.9 and 1" in " ".join(r.output.split()), r.output
    # `vitkit predict` on the written benchmark files says what the demo's own page classifier said
    records = [json.loads(line) for line in (out / "frb" / "hard.jsonl").read_text().splitlines()][::5]
    picks = [0, 7, 30]
    r = runner.invoke(app, ["predict", str(out / "model"), *(str(out / "frb" / records[i]["path"]) for i in picks),
                            "-k", "1"])
    assert r.exit_code == 0, r.output
    tops = [line.split("│")[1].strip() for line in r.output.splitlines() if line.count("│") == 3]
    assert tops == [metrics["frb"]["hard"]["predictions"][i] for i in picks], r.output


def test_frb_pages_restricts_to_fonts_and_remaps_labels():
    from vitkit.frb.pages import frb_pages

    samples = frb.easy_split("canvas440")[:40]  # font-major: the first 4 fonts, 10 sentences each
    pages, labels = frb_pages(samples, fonts=[frb.FONT_NAMES[3], frb.FONT_NAMES[1]])
    assert pages.shape == (20, 1, 240, 440) and 0 <= pages.min() and pages.max() <= 1
    assert labels.tolist() == [1] * 10 + [0] * 10
    with pytest.raises(ValueError, match="no FRB samples"):
        frb_pages(samples, fonts=["Lobster"])


def test_data_frb_rejects_an_unknown_layout_in_one_line(tmp_path):
    r = runner.invoke(app, ["data", "frb", "--out", str(tmp_path / "frb"), "--n-train", "0", "--n-val", "0",
                            "--layout", "a4"])
    assert r.exit_code == 2 and "a4" in r.output and "canvas440" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "frb").exists()  # nothing written
