"""Region maps (scenes, FRB ink boxes, PNG folders) and manipulation data."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from vitkit.pretrain.data import FolderRegions, PageCropRegions, PageRegions, SceneRegions, pretrain_dataset
from vitkit.pretrain.manip import MANIPULATIONS, ManipulationDataset, diffuse_fill, manipulate
from vitkit.pretrain.page_manip import page_crop
from vitkit.pretrain.regions import boxes_to_map, ink_boxes, read_id_map, relabel, resize_map


def test_ink_boxes_find_words_and_lines():
    img = Image.new("RGB", (120, 60), (250, 245, 230))
    d = ImageDraw.Draw(img)
    boxes = [(10, 8, 40, 20), (52, 8, 70, 20), (10, 34, 60, 48)]  # two words on line 1, one on line 2
    for b in boxes:
        d.rectangle((b[0], b[1], b[2] - 1, b[3] - 1), fill=(20, 20, 60))
    words, lines = ink_boxes(np.asarray(img))
    assert words == boxes
    assert lines == [(10, 8, 70, 20), (10, 34, 60, 48)]
    ids = boxes_to_map(words, 60, 120)
    assert set(np.unique(ids).tolist()) == {0, 1, 2, 3} and ids[10, 20] == 1 and ids[40, 30] == 3


def test_scene_and_page_regions():
    x, r = SceneRegions(2, size=32)[1]
    assert x.shape == (3, 32, 32) and r.shape == (32, 32) and r.dtype == torch.int64
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    x, r = PageRegions(1, size=32)[0]
    assert x.shape == (3, 32, 32) and int(r.max()) >= 1  # at least one word box on a page


def test_page_crop_regions_are_the_detector_crops():
    ds = pretrain_dataset("frb-crops", n=2, seed=3, size=32)
    assert isinstance(ds, PageCropRegions)
    x, r = ds[1]
    c = page_crop(3, 1, 32)  # the crop the page-crop detector sees, with its word map as regions
    assert x.shape == (3, 32, 32) and r.dtype == torch.int64
    assert torch.equal(x, torch.from_numpy(c.image).permute(2, 0, 1).float() / 255)
    assert torch.equal(r, torch.from_numpy(c.words).long()) and int(r.max()) >= 1
    with pytest.raises(ValueError, match="bring their own word maps"):
        pretrain_dataset("frb-crops", n=1, seed=0, size=32, region_maps="maps")


def test_folder_regions(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "maps").mkdir()
    for k in range(2):
        Image.fromarray(np.full((20, 30, 3), 40 * k, np.uint8)).save(tmp_path / "img" / f"a{k}.png")
        ids = np.zeros((20, 30), np.uint8)
        ids[5:10, 5:20] = 7
        Image.fromarray(ids).save(tmp_path / "maps" / f"a{k}.png")
    ds = pretrain_dataset(str(tmp_path / "img"), n=0, seed=0, size=16, region_maps=str(tmp_path / "maps"))
    x, r = ds[1]
    assert x.shape == (3, 16, 16) and set(r.unique().tolist()) == {0, 1}  # ids compacted
    assert FolderRegions(tmp_path / "img", size=16)[0][1].max() == 0
    (tmp_path / "maps" / "a1.png").unlink()
    with pytest.raises(ValueError, match="a1.png"):
        FolderRegions(tmp_path / "img", tmp_path / "maps")
    Image.new("RGB", (4, 4)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="single-channel"):
        read_id_map(tmp_path / "rgb.png")
    with pytest.raises(FileNotFoundError, match="neither"):
        pretrain_dataset(str(tmp_path / "nope"), n=1, seed=0, size=16)


def test_resize_and_relabel():
    ids = np.array([[0, 5], [9, 5]])
    assert resize_map(ids, (4, 4))[3, 0] == 9
    assert relabel(ids).tolist() == [[0, 1], [2, 1]]
    assert relabel(np.array([[3, 4]])).tolist() == [[1, 2]]


@pytest.mark.parametrize("kind", MANIPULATIONS)
def test_manipulations_change_only_their_pixels(kind):
    from vitkit.data.scenes import render_scene

    s = render_scene(0, 3, size=48)
    donor = render_scene(1, 3, size=48).image
    out, changed = manipulate(kind, s.image, s.parts, np.random.default_rng(0), donor)
    assert out.shape == s.image.shape and out.dtype == np.uint8 and changed.any()
    assert np.array_equal(out[~changed], s.image[~changed])
    assert (out != s.image).any(axis=-1).sum() > 0


def test_diffuse_fill_reproduces_a_smooth_image():
    img = np.repeat(np.linspace(0, 200, 32)[None, :, None], 32, 0).repeat(3, 2).astype(np.uint8)
    mask = np.zeros((32, 32), bool)
    mask[10:20, 10:20] = True
    assert np.abs(diffuse_fill(img, mask, iters=400).astype(int) - img.astype(int)).max() <= 3


def test_manipulation_dataset_labels_and_kinds():
    ds = ManipulationDataset(6, kinds=["recolour", "splice"], seed=0, size=32)
    labels = [int(ds[i][1]) for i in range(6)]
    assert labels == [0, 1, 0, 1, 0, 1]
    assert [ds.kind(i) for i in range(4)] == [None, "recolour", None, "splice"]
    assert torch.equal(ds[3][0], ManipulationDataset(6, kinds=["recolour", "splice"], seed=0, size=32)[3][0])
    real, fake = ds[2][0], ds[3][0]  # a pair: the same scene, only the spliced square differs
    changed = (real != fake).any(0)
    assert changed.any() and not changed.all()
    with pytest.raises(ValueError, match="kinds"):
        ManipulationDataset(2, kinds=["blur"])
