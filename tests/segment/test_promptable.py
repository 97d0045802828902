"""Metrics, the segmenter protocol and its adapters, the evaluation protocols and the run."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from vitkit.segment.concepts import render_clip, render_concept
from vitkit.segment.mask_metrics import iou_dice, saliency_measures, score_mask
from vitkit.segment.prompt_eval import (
    in_context_segmenter,
    segment_automatic,
    segment_clip,
    segment_with_boxes,
    segment_with_clicks,
    union_of_boxes,
)
from vitkit.segment.promptable_model import PromptSegConfig, PromptSegmenter
from vitkit.segment.promptable_train import segmenter_loss
from vitkit.segment.prompting import boxes_from_mask, connected_components
from vitkit.segment.segmenters import BuiltinSegmenter, SamSegmenter, Segmenter

TINY = PromptSegConfig(size=32, patch=8, dim=32, depth=2, heads=2, dec_dim=32, dec_depth=1)


def test_iou_dice_hand_computed():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[0, :3] = True  # 3 px
    b[0, 1:] = True  # 3 px, 2 shared
    iou, dice = iou_dice(a, b)
    assert iou == pytest.approx(2 / 4) and dice == pytest.approx(4 / 6)
    assert iou_dice(np.zeros((2, 2), bool), np.zeros((2, 2), bool)) == (1.0, 1.0)


def test_saliency_measures_equal_pysodmetrics_own():
    sod = pytest.importorskip("py_sod_metrics")
    rng = np.random.default_rng(0)
    gt = np.zeros((48, 48), bool)
    gt[10:30, 12:40] = True
    pred = gt.copy()
    pred[25:35, 5:20] = True
    pred[rng.random(gt.shape) < 0.05] ^= True
    ours = saliency_measures(pred, gt)
    p8, g8 = pred.astype(np.uint8) * 255, gt.astype(np.uint8) * 255
    ref = {}
    for name, m in (("mae", sod.MAE()), ("sm", sod.Smeasure()), ("em", sod.Emeasure()), ("wfm", sod.WeightedFmeasure())):
        m.step(pred=p8, gt=g8)
        ref[name] = m.get_results()
    assert ours["mae"] == pytest.approx(float(ref["mae"]["mae"]))
    assert ours["mae"] == pytest.approx(float((pred != gt).mean()))
    assert ours["sm"] == pytest.approx(float(ref["sm"]["sm"]))
    assert ours["em"] == pytest.approx(float(np.mean(ref["em"]["em"]["curve"])))
    assert ours["wfm"] == pytest.approx(float(ref["wfm"]["wfm"]))
    perfect = saliency_measures(gt, gt)
    assert perfect["mae"] == 0 and perfect["sm"] == pytest.approx(1) and perfect["wfm"] == pytest.approx(1)


class TruthSegmenter:
    """Knows each image's truth: a box gets the truth inside it; points get [truth, ¬truth, ∅]."""

    def __init__(self, truths: dict[bytes, np.ndarray]) -> None:
        self.truths = truths
        self.calls = 0

    def predict(self, image, boxes=None, points=None, point_labels=None, multimask=True):
        self.calls += 1
        gt = self.truths[image.tobytes()]
        if boxes is not None:
            x0, y0, x1, y1 = np.asarray(boxes).reshape(4).round().astype(int)
            m = np.zeros_like(gt)
            m[y0 : y1 + 1, x0 : x1 + 1] = gt[y0 : y1 + 1, x0 : x1 + 1]
            return m[None], np.ones(1)
        return np.stack([~gt, np.zeros_like(gt), gt]), np.ones(3)

    def generate(self, image):
        gt = self.truths[image.tobytes()]
        lab, k = connected_components(gt)
        return np.stack([~gt] + [lab == i for i in range(1, k + 1)]), np.ones(k + 1)


def test_a_segmenter_returning_the_truth_scores_iou_one():
    data = render_concept("defects", 3, seed=0, size=48)
    seg = TruthSegmenter({img.tobytes(): gt for img, gt in zip(data.images, data.truths, strict=True)})
    assert isinstance(seg, Segmenter)
    for img, gt in zip(data.images, data.truths, strict=True):
        assert score_mask(segment_with_boxes(seg, img, gt), gt, saliency=False)["iou"] == 1.0
        pred, clicks = segment_with_clicks(seg, img, gt)
        assert clicks == 1 and score_mask(pred, gt, saliency=False)["iou"] == 1.0
        assert score_mask(segment_automatic(seg, img, gt), gt, saliency=False)["iou"] == 1.0
        # perturbed boxes cut the truth: never better than the clean ones
        rng = np.random.default_rng(0)
        assert score_mask(segment_with_boxes(seg, img, gt, rng), gt, saliency=False)["iou"] <= 1.0
    frames, truths = render_clip("salient", 0, seed=0, size=48, frames=4)
    assert frames.shape == (4, 48, 48, 3) and truths.any(axis=(1, 2)).all()
    seg = TruthSegmenter({f.tobytes(): t for f, t in zip(frames, truths, strict=True)})
    preds = segment_clip(seg, frames, truths, 4, "box")
    np.testing.assert_array_equal(preds, truths)


class StubPredictor:
    """Records what a segment-anything style predictor receives."""

    def __init__(self) -> None:
        self.images, self.calls = 0, []

    def set_image(self, image):
        assert image.dtype == np.uint8 and image.shape[2] == 3
        self.images += 1

    def get_image_embedding(self):
        return torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(1, 2, 3, 4)  # (1, C, h, w)

    def predict(self, point_coords=None, point_labels=None, box=None, multimask_output=True):
        self.calls.append((point_coords, point_labels, box, multimask_output))
        n = 3 if multimask_output else 1
        return np.ones((n, 8, 8), np.float32), np.linspace(0.9, 0.5, n), np.zeros((n, 4, 4))


def test_sam_adapter_converts_boxes_and_points():
    pred = StubPredictor()
    seg = SamSegmenter(predictor=pred)
    img = np.zeros((8, 8, 3), np.uint8)
    masks, scores = seg.predict(img, boxes=np.array([[1, 2, 5, 6]]), multimask=False)
    pts, lab, box, mm = pred.calls[-1]
    assert pts is None and lab is None and mm is False
    np.testing.assert_array_equal(box, [1, 2, 5, 6]) and box.shape == (4,) and box.dtype == np.float32
    assert masks.shape == (1, 8, 8) and masks.dtype == bool and scores.shape == (1,)
    seg.predict(img, points=[[3, 4], [1, 1]], point_labels=[1, 0])
    pts, lab, box, mm = pred.calls[-1]
    np.testing.assert_array_equal(pts, [[3, 4], [1, 1]]) and pts.shape == (2, 2)
    np.testing.assert_array_equal(lab, [1, 0])
    assert box is None and mm is True
    assert pred.images == 1  # the same image is set once
    feats = seg.features(img)  # (h, w, C) for in-context prompting
    assert feats.shape == (3, 4, 2) and feats[1, 2, 1] == 12 + 1 * 4 + 2 and pred.images == 1
    with pytest.raises(ValueError, match="one box"):
        seg.predict(img, boxes=np.zeros((2, 4)))
    with pytest.raises(ValueError, match="automatic"):
        seg.generate(img)


def test_builtin_model_shapes_loss_and_adapter_scaling():
    torch.manual_seed(0)
    model = PromptSegmenter(config=TINY)
    x = torch.rand(2, 3, 32, 32)
    masks, iou = model(x, torch.tensor([[[3.0, 4.0], [0, 0]]] * 2), torch.tensor([[1, -1]] * 2))
    assert masks.shape == (2, 4, 32, 32) and iou.shape == (2, 4)
    masks_b, _ = model(x, boxes=torch.tensor([[2.0, 2, 20, 20]] * 2))
    target = torch.zeros(2, 32, 32, dtype=torch.bool)
    target[:, 5:15, 5:15] = True
    loss = segmenter_loss(masks_b, iou, target)
    loss.backward()
    assert torch.isfinite(loss) and model.hyper[0][0].weight.grad is not None
    seg = BuiltinSegmenter(model=model, grid=2)
    img = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)  # twice the model's side
    m, s = seg.predict(img, points=np.array([[10.0, 12.0]]), point_labels=np.array([1]))
    assert m.shape == (3, 64, 64) and s.shape == (3,)
    m1, _ = seg.predict(img, boxes=np.array([4.0, 4, 40, 40]), multimask=False)
    assert m1.shape == (1, 64, 64)
    # prompts are scaled with the image: the 64-px call equals the 32-px model on a resized image
    small = torch.nn.functional.interpolate(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255, size=(32, 32),
                                            mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        ref, _ = model(small, boxes=torch.tensor([[2.0, 2, 20, 20]]))
    ref = torch.nn.functional.interpolate(ref, size=(64, 64), mode="bilinear", align_corners=False)[0, :1] > 0
    np.testing.assert_array_equal(m1, ref.numpy())
    gm, gs = seg.generate(img)
    assert gm.ndim == 3 and len(gm) == len(gs)


def test_batched_boxes_equal_one_box_at_a_time():
    torch.manual_seed(1)
    seg = BuiltinSegmenter(model=PromptSegmenter(config=TINY))
    img = (np.random.default_rng(2).random((48, 48, 3)) * 255).astype(np.uint8)  # resized to the 32-px model
    boxes = np.array([[2.0, 3, 20, 25], [10, 10, 47, 40], [30, 1, 44, 12]], np.float32)
    batched = seg.predict_boxes(img, boxes)
    one = np.stack([seg.predict(img, boxes=b, multimask=False)[0][0] for b in boxes])
    assert batched.shape == (3, 48, 48) and one.any() and not one.all()
    np.testing.assert_array_equal(batched, one)
    np.testing.assert_array_equal(union_of_boxes(seg, img, boxes), one.any(0))
    assert seg.predict_boxes(img, np.zeros((0, 4))).shape == (0, 48, 48)


class MemorySegmenter(TruthSegmenter):
    """A segmenter with memory: ``track`` records what it was given and returns each frame's truth."""

    def track(self, frames, prompts):
        self.tracked = (frames, prompts)
        return np.stack([self.truths[f.tobytes()] for f in frames])


def test_in_context_by_memory_sees_the_prompt_images_as_first_frames():
    data = render_concept("salient", 4, seed=0, size=32)
    seg = MemorySegmenter({img.tobytes(): gt for img, gt in zip(data.images, data.truths, strict=True)})
    predict = in_context_segmenter(seg, data.images[:3], data.truths[:3])
    np.testing.assert_array_equal(predict(data.images[3]), data.truths[3])
    frames, prompts = seg.tracked
    assert len(frames) == 4 and (frames[3] == data.images[3]).all() and sorted(prompts) == [0, 1, 2]
    np.testing.assert_array_equal(prompts[1]["boxes"], boxes_from_mask(data.truths[1]))
    with pytest.raises(ValueError, match="neither track"):
        in_context_segmenter(TruthSegmenter({}), data.images[:1], data.truths[:1])


def test_in_context_by_features_prompts_the_concept_and_keeps_the_best_scored_candidate():
    torch.manual_seed(0)
    seg = BuiltinSegmenter(model=PromptSegmenter(config=TINY))
    data = render_concept("salient", 3, seed=0, size=32)
    calls = []
    predict_orig = seg.predict

    def spy(image, **kw):
        masks, scores = predict_orig(image, **kw)
        calls.append((kw, masks, scores))
        return masks, scores

    seg.predict = spy
    predict = in_context_segmenter(seg, data.images[:2], data.truths[:2])
    pred = predict(data.images[2])
    kw, masks, scores = calls[-1]
    np.testing.assert_array_equal(kw["point_labels"], [1, 0])
    assert kw["multimask"] and pred.shape == (32, 32) and pred.dtype == bool
    np.testing.assert_array_equal(pred, masks[int(np.argmax(scores))])  # no oracle: the segmenter's own score


def test_run_promptable_end_to_end_tiny(tmp_path):
    from vitkit.segment.promptable import PromptableConfig, run_promptable
    from vitkit.segment.promptable_train import PromptTrainConfig

    cfg = PromptableConfig(concepts=("salient", "lesions"), images=2, clips=1, frames=3, video_k=(1, 3), size=32,
                           context_k=(1, 2),
                           train=PromptTrainConfig(model=TINY, scenes=8, steps=2, batch_size=2, warmup=1),
                           out_dir=str(tmp_path), progress=False, workers=1)
    r = run_promptable(cfg)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved["images"]) == {f"{c}|{p}|{k}" for c in ("salient", "lesions") for p in ("box", "point")
                                    for k in ("clean", "perturbed")} | {f"{c}|{p}|clean" for c in ("salient", "lesions")
                                                                        for p in ("auto", "in-context 1", "in-context 2")}
    assert len(saved["video"]) == 2 * 2 * 2 * 2 and r["images"]["salient|box|clean"]["n"] == 2
    assert 1 <= saved["images"]["lesions|point|clean"]["clicks"] <= 6
    html = (tmp_path / "report.html").read_text()
    assert "concept × prompt × metric" in html and "lesions" in html
    assert (tmp_path / "builtin.pt").is_file()
    # the trained segmenter is reused, and the seeded run repeats exactly, also in a pool of processes
    again = run_promptable(replace(cfg, workers=2))
    assert again["segmenter"]["loaded"] and again["per_image"] == saved["per_image"]
    # (JSON text: an undefined S-measure is NaN, which never equals itself)
    assert json.dumps([again["images"], again["video"]]) == json.dumps([r["images"], r["video"]])


def test_cli_rejects_unknown_concept(tmp_path):
    from typer.testing import CliRunner

    from vitkit.cli import app

    res = CliRunner().invoke(app, ["segment", "evaluate", "--concepts", "salient,clouds", "--out", str(tmp_path)])
    assert res.exit_code != 0 and "clouds" in res.output


def test_config_rejects_bad_prompt_kinds_and_in_context_counts():
    from vitkit.segment.promptable import PromptableConfig

    with pytest.raises(ValueError, match="box, point, auto, context"):
        PromptableConfig(prompts=("box", "contxt"))
    with pytest.raises(ValueError, match="in-context"):
        PromptableConfig(context_k=(0, 5))
    with pytest.raises(ValueError, match="in-context"):
        in_context_segmenter(BuiltinSegmenter(model=PromptSegmenter(config=TINY)), np.zeros((0, 32, 32, 3), np.uint8),
                             np.zeros((0, 32, 32), bool))


def test_crop_window_drops_slivers_and_stays_inside():
    from vitkit.segment.promptable_train import crop_window

    img = np.arange(10 * 10 * 3, dtype=np.uint8).reshape(10, 10, 3)
    ins = np.zeros((10, 10), np.uint8)
    ins[0:5, 0:5] = 1  # 25 px
    ins[9, 9] = 2  # 1 px: a sliver in any window that holds it
    for seed in range(5):
        im, m = crop_window(img, ins, 6, np.random.default_rng(seed), min_pixels=2)
        assert im.shape == (6, 6, 3) and m.shape == (6, 6)
        assert 2 not in m  # dropped: fewer than min_pixels
        # the window is a real crop of the image: its first pixel fixes the offset
        y0, x0 = divmod(int(im[0, 0, 0]) // 3, 10)
        np.testing.assert_array_equal(im, img[y0 : y0 + 6, x0 : x0 + 6])
        kept = ins[y0 : y0 + 6, x0 : x0 + 6] == 1
        np.testing.assert_array_equal(m == 1, kept if kept.sum() >= 2 else np.zeros_like(kept))


def test_instance_pixels_and_prompts_stay_where_they_belong():
    from vitkit.segment.promptable_train import MAX_POINTS, InstanceIndex, instance_pixels, sample_prompt

    ins = np.zeros((12, 12), np.uint8)
    ins[2:6, 3:9] = 1
    ins[3, 4] = 2  # a hole of another instance inside instance 1's box
    ins[8:11, 0:2] = 3
    px = instance_pixels(ins, 1)
    assert px.box == (3, 2, 8, 5) and len(px.ys) == 4 * 6 - 1
    assert (ins[px.ys, px.xs] == 1).all() and list(zip(px.ny, px.nx, strict=True)) == [(3, 4)]
    assert (np.diff(px.ys * 12 + px.xs) > 0).all()  # row-major, as np.nonzero gives them
    index = InstanceIndex(ins[None])
    np.testing.assert_array_equal(index.ids(0), [1, 2, 3])
    assert index.pixels(0, 1) is index.pixels(0, 1)  # found once, then kept
    rng = np.random.default_rng(0)
    for _ in range(200):
        for k in (1, 2, 3):
            p = index.pixels(0, k)
            box, pts, labels = sample_prompt(p, 12, rng, True, 0.1)
            assert pts.shape == (MAX_POINTS, 2) and (labels == -1).all()
            x0, y0, x1, y1 = p.box
            assert 0 <= box[0] <= box[2] <= 11 and 0 <= box[1] <= box[3] <= 11
            # SAM's jitter: each side moves at most 2 × 0.1 of the box's side
            assert abs(box[0] - x0) <= 0.2 * (x1 - x0 + 1) + 1e-5 and abs(box[3] - y1) <= 0.2 * (y1 - y0 + 1) + 1e-5
            none, pts, labels = sample_prompt(p, 12, rng, False, 0.1)
            pos, neg = pts[labels == 1].astype(int), pts[labels == 0].astype(int)
            assert none is None and 1 <= len(pos) <= 3 and len(neg) <= 2 and (labels[len(pos) + len(neg):] == -1).all()
            assert (ins[pos[:, 1], pos[:, 0]] == k).all()
            assert (ins[neg[:, 1], neg[:, 0]] != k).all() and all(x0 <= x <= x1 and y0 <= y <= y1 for x, y in neg)
            if k == 3:
                assert len(neg) == 0  # its box holds nothing else


def test_builtin_keeps_the_embeddings_of_recent_images():
    torch.manual_seed(1)
    seg = BuiltinSegmenter(model=PromptSegmenter(config=TINY), cache=2)
    imgs = (np.random.default_rng(3).random((3, 32, 32, 3)) * 255).astype(np.uint8)
    calls = []
    embed = seg.model.embed
    seg.model.embed = lambda x: calls.append(1) or embed(x)
    first = seg.predict(imgs[0], boxes=np.array([2.0, 2, 20, 20]))[0]
    seg.predict(imgs[1], boxes=np.array([2.0, 2, 20, 20]))
    again = seg.predict(imgs[0], boxes=np.array([2.0, 2, 20, 20]))[0]  # still cached
    assert len(calls) == 2
    np.testing.assert_array_equal(first, again)
    seg.predict(imgs[2], boxes=np.array([2.0, 2, 20, 20]))  # drops image 1, the least recently used
    seg.predict(imgs[0], boxes=np.array([2.0, 2, 20, 20]))
    seg.predict(imgs[1], boxes=np.array([2.0, 2, 20, 20]))
    assert len(calls) == 4
    with pytest.raises(ValueError, match="cache"):
        BuiltinSegmenter(model=seg.model, cache=0)


def test_training_scenes_without_zoom_are_the_plain_scenes_and_zoom_enlarges_objects():
    from vitkit.data.scenes import render_many
    from vitkit.segment.promptable_train import PromptTrainConfig, render_training_scenes

    plain = PromptTrainConfig(model=TINY, scenes=12, zoom_share=0.0, seed=3)
    images, inst = render_training_scenes(plain)
    ref = render_many(12, seed=3, size=32)
    np.testing.assert_array_equal(images, ref["image"])
    np.testing.assert_array_equal(inst, ref["instance"])
    zoomed_images, zoomed = render_training_scenes(PromptTrainConfig(model=TINY, scenes=12, zoom=3.0, zoom_share=1.0,
                                                                    seed=3))
    assert zoomed_images.shape == images.shape and zoomed.shape == inst.shape

    def mean_area(maps):
        return np.mean([(m == k).sum() for m in maps for k in np.unique(m)[1:]])

    assert mean_area(zoomed) > 1.5 * mean_area(inst)
    assert all((np.bincount(m.ravel())[1:][np.bincount(m.ravel())[1:] > 0] >= 8).all() for m in zoomed)


def test_checkpoint_without_fuse_skip_loads_the_linear_skip(tmp_path):
    from dataclasses import replace

    from vitkit.segment.segmenters import save_builtin

    torch.manual_seed(0)
    old = PromptSegmenter(config=replace(TINY, fuse_skip=False))
    path = save_builtin(old, tmp_path / "old.pt")
    ckpt = torch.load(path, weights_only=True)
    del ckpt["config"]["fuse_skip"]  # what a checkpoint saved before the field existed holds
    torch.save(ckpt, path)
    seg = BuiltinSegmenter.from_checkpoint(path)
    assert seg.model.config.fuse_skip is False
    x, box = torch.rand(1, 3, 32, 32), torch.tensor([[2.0, 2, 20, 20]])
    with torch.no_grad():
        torch.testing.assert_close(seg.model(x, boxes=box)[0], old.eval()(x, boxes=box)[0])
        fused = PromptSegmenter(config=TINY).eval()
        fused.load_state_dict(old.state_dict())  # same weights, the fused read-out: another output
        assert not torch.allclose(fused(x, boxes=box)[0], old(x, boxes=box)[0])


def test_training_callback_sees_every_50_steps():
    from vitkit.segment.promptable_train import PromptTrainConfig, train_prompt_segmenter

    seen = []
    cfg = PromptTrainConfig(model=TINY, scenes=8, steps=100, batch_size=2, warmup=1)
    model, info = train_prompt_segmenter(cfg, progress=False, callback=lambda s, m: seen.append((s, m.training)))
    assert seen == [(50, False), (100, False)] and info["done"] and not model.training


def test_cli_help_names_the_training_default():
    from typer.testing import CliRunner

    from vitkit.cli import app
    from vitkit.segment.promptable_train import PromptTrainConfig

    res = CliRunner().invoke(app, ["segment", "evaluate", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and f"PromptTrainConfig's, {PromptTrainConfig().steps}" in res.output


def test_finite_mean_skips_undefined_scores():
    from vitkit.segment.promptable import finite_mean

    assert finite_mean([0.5, float("nan"), 1.0]) == pytest.approx(0.75)
    assert np.isnan(finite_mean([float("nan")]))
    assert np.isnan(finite_mean([]))


def test_s_measure_of_a_corner_object_is_undefined_and_skipped():
    """pysodmetrics gives NaN for an object in a corner even when the prediction is perfect; the averages
    must skip it instead of turning the whole clip's score into NaN."""
    pytest.importorskip("py_sod_metrics")
    from vitkit.segment.promptable import finite_mean

    corner = render_clip("salient", 2, seed=2, size=64, frames=8)[1][5]  # 12 px of an object leaving the frame
    centre = np.zeros((64, 64), bool)
    centre[20:40, 20:40] = True
    scores = [saliency_measures(corner, corner)["sm"], saliency_measures(centre, centre)["sm"]]
    assert np.isnan(scores[0]) and scores[1] == pytest.approx(1.0)
    assert finite_mean(scores) == pytest.approx(1.0)
