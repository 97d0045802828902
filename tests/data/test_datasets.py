"""ImageFolderDataset and ManifestDataset: labels, skipped files, manifests, errors."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitkit.data.datasets import ImageFolderDataset, ManifestDataset
from vitkit.data.images import ImageDecodeError

LOGGER = "vitkit.data.datasets"


def _png_bytes(value: int, size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), (value, 255 - value, 0)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    """3 classes: ant (2 good + 1 truncated), bee (3 good), cat (1 good + 1 text file .jpg)."""
    root = tmp_path / "imgs"
    for cls, n in [("ant", 2), ("bee", 3), ("cat", 1)]:
        (root / cls).mkdir(parents=True)
        for i in range(n):
            (root / cls / f"{i}.png").write_bytes(_png_bytes(40 * i))
    good = _png_bytes(7, size=64)
    (root / "ant" / "broken.png").write_bytes(good[: len(good) // 2])
    (root / "cat" / "notes.jpg").write_text("this is not an image\n")
    (root / "cat" / "README.txt").write_text("ignored: not an image extension\n")
    return root


def test_image_folder_counts_labels_and_skipped(folder, caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        ds = ImageFolderDataset(folder)
    assert ds.classes == ["ant", "bee", "cat"]
    assert ds.class_to_idx == {"ant": 0, "bee": 1, "cat": 2}
    assert len(ds) == 6
    assert sorted(ds.targets) == [0, 0, 1, 1, 1, 2]
    skipped = dict(ds.skipped)
    assert set(skipped) == {str(folder / "ant" / "broken.png"), str(folder / "cat" / "notes.jpg")}
    assert "truncated or corrupt" in skipped[str(folder / "ant" / "broken.png")]
    assert "not an image" in skipped[str(folder / "cat" / "notes.jpg")]

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    msg = warnings[0].getMessage()
    assert "Skipped 2 of 8" in msg and "ant/broken.png" in msg and "cat/notes.jpg" in msg

    img, label = ds[0]
    assert isinstance(img, Image.Image) and img.mode == "RGB" and label == 0
    assert all(Path(p).name not in ("broken.png", "notes.jpg") for p, _ in ds.samples)


def test_image_folder_transform_and_given_classes(folder):
    ds = ImageFolderDataset(folder, classes=["cat", "ant"], transform=lambda im: np.asarray(im))
    assert ds.classes == ["cat", "ant"] and len(ds) == 3  # bee ignored
    arr, label = ds[0]
    assert isinstance(arr, np.ndarray) and arr.shape == (8, 8, 3) and label == 0
    assert [lbl for _, lbl in ds.samples] == [0, 1, 1]


def test_image_folder_unknown_class_and_extensions(folder):
    with pytest.raises(ValueError, match="no sub-folder for class"):
        ImageFolderDataset(folder, classes=["ant", "dog"])
    ds = ImageFolderDataset(folder, extensions=(".jpg",), verify=False)  # only notes.jpg
    assert len(ds) == 1


def test_verify_false_raises_on_access(folder):
    ds = ImageFolderDataset(folder, verify=False)
    assert len(ds) == 8 and ds.skipped == []
    bad = next(i for i, (p, _) in enumerate(ds.samples) if p.endswith("broken.png"))
    with pytest.raises(ImageDecodeError, match="broken.png"):
        ds[bad]


def test_empty_and_all_unreadable_folders(tmp_path):
    empty = tmp_path / "empty"
    (empty / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="empty.*has no image files"):
        ImageFolderDataset(empty)
    bad = tmp_path / "bad"
    (bad / "a").mkdir(parents=True)
    (bad / "a" / "x.png").write_text("nope")
    with pytest.raises(ValueError, match="bad.*none of its 1 image files"):
        ImageFolderDataset(bad)
    with pytest.raises(ValueError, match="not a directory"):
        ImageFolderDataset(tmp_path / "missing")


def test_warning_names_at_most_five(tmp_path, caplog):
    root = tmp_path / "many"
    (root / "a").mkdir(parents=True)
    (root / "a" / "good.png").write_bytes(_png_bytes(1))
    for i in range(7):
        (root / "a" / f"bad{i}.png").write_text("x")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        ds = ImageFolderDataset(root)
    assert len(ds) == 1 and len(ds.skipped) == 7
    msg = caplog.records[0].getMessage()
    assert msg.count("a/bad") == 5 and "and 2 more" in msg


# ------------------------------------------------------------------------------------------
# Manifests
# ------------------------------------------------------------------------------------------


def test_jsonl_manifest(folder, caplog):
    lines = [
        {"path": "ant/0.png", "label": 0, "font": "x"},
        {"path": "bee/1.png", "label": 1},
        {"path": "ant/broken.png", "label": 0},
        {"path": "missing.png", "label": 2},
    ]
    manifest = folder / "train.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in lines) + "\n\n")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        ds = ManifestDataset(manifest, transform=lambda im: im.size)
    assert len(ds) == 2 and ds.targets == [0, 1] and ds.num_classes == 2
    assert ds[1] == ((8, 8), 1)
    assert [Path(p).name for p, _ in ds.skipped] == ["broken.png", "missing.png"]
    assert "does not exist" in ds.skipped[1][1]
    assert "Skipped 2 of 4" in caplog.records[0].getMessage()


def test_csv_manifest_with_root_and_keys(folder, tmp_path):
    manifest = tmp_path / "elsewhere" / "m.csv"
    manifest.parent.mkdir()
    manifest.write_text("file,cls\nbee/0.png,1\ncat/0.png, 2\n")
    ds = ManifestDataset(manifest, root=folder, path_key="file", label_key="cls")
    assert ds.targets == [1, 2] and ds.skipped == []
    assert ds[0][0].size == (8, 8)


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("m.jsonl", '{"path": "a.png", "label": 0}\n{"path": "b.png", "label": 1\n', r"m\.jsonl' line 2: not valid JSON"),
        ("m.jsonl", '{"path": "a.png", "label": 0}\n\n[1, 2]\n', "line 3: expected a JSON object"),
        ("m.jsonl", '{"path": "a.png"}\n', "line 1: missing key 'label'"),
        ("m.jsonl", '{"path": "a.png", "label": "cat"}\n', "line 1: 'label' must be an integer"),
        ("m.jsonl", '{"path": "a.png", "label": -1}\n', "line 1: 'label' must be a non-negative integer"),
        ("m.csv", "path,label\na.png,0\nb.png\n", r"m\.csv' line 3: 1 fields but the header has 2"),
        ("m.csv", "path,label\na.png,0,extra\n", "line 2: 3 fields"),
        ("m.csv", "file,label\na.png,0\n", "line 2: missing key 'path'"),
        ("m.txt", "a.png 0\n", "unknown suffix"),
        ("m.jsonl", "\n\n", "lists no images"),
    ],
)
def test_malformed_manifest(tmp_path, name, text, match):
    manifest = tmp_path / name
    manifest.write_text(text)
    with pytest.raises(ValueError, match=match):
        ManifestDataset(manifest, verify=False)


def test_manifest_all_unreadable(tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"path": "nope.png", "label": 0}\n')
    with pytest.raises(ValueError, match=r"m\.jsonl.*none of its 1 image files"):
        ManifestDataset(manifest)


def test_progress_bar_path_runs(folder, monkeypatch):
    import vitkit.data.datasets as mod

    monkeypatch.setattr(mod, "PROGRESS_MIN_FILES", 2)
    ds = ImageFolderDataset(folder)
    assert len(ds) == 6
