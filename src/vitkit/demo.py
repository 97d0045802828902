"""The main job (`vitkit demo`, `make demo`): Font Recognition Benchmark end to end.

generate FRB in the paper's layout (easy, hard as JPEG files on disk; training pages in memory) →
bring every page to one text scale → train a small ViT from scratch on ink crops of the training
pages → classify whole pages by averaging over ink tiles (the model's page pipeline, saved with it,
so ``vitkit predict`` reads a page file exactly as the demo does) → evaluate easy and hard with
every protocol that applies to a classifier (classifier accuracy, multiple choice among 4, few-shot
retrieval over single-letter exemplars) and the page classifier's robustness (scale, inversion,
JPEG) → ``report.html`` and ``metrics.json``. Zero-shot needs a CLIP-style model and is not run on
the demo's classifier.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from . import __version__, frb
from .frb.batching import embed_samples
from .frb.classifier import TiledClassifier
from .frb.ink import pil_to_tensor
from .frb.pages import frb_pages
from .frb.protocols import (
    PAPER_RESULTS,
    evaluate_classifier,
    evaluate_few_shot,
    evaluate_multiple_choice,
    letter_exemplars,
)
from .frb.recipe import DemoConfig, check_backbone, train_crop_classifier, training_pages
from .frb.robust import VARIANTS, variant_split
from .models.vit import VisionTransformer
from .predict import page_classifier
from .report import (
    Report,
    Section,
    escape,
    make_id,
    protocol_section,
    samples_section,
    summary_section,
    table,
    training_section,
)

log = logging.getLogger(__name__)


@dataclass
class DemoContext:
    """What a report section (one per method package, listed in :mod:`vitkit.demo_sections`) receives from a
    finished demo run.

    Pages are grey ``(P, 1, H, W)`` tensors in [0, 1] (ink dark, see ``normalize_pages``);
    ``classifier`` maps such pages to ``(P, 15)`` logits, ``model`` maps ``to_model_input`` crops
    ``(B, 3, crop, crop)`` to logits. A section may add its figures to ``metrics[<its key>]``.
    """

    cfg: DemoConfig
    out: Path
    model: VisionTransformer
    classifier: TiledClassifier
    train_pages: torch.Tensor
    train_labels: torch.Tensor
    val_pages: torch.Tensor
    val_labels: torch.Tensor
    easy: list[frb.FRBSample]
    hard: list[frb.FRBSample]
    metrics: dict = field(default_factory=dict)


SectionBuilder = Callable[[DemoContext], "Section"]


def extra_sections() -> list[tuple[str, SectionBuilder]]:
    """The method packages' report sections, as (name, builder); see :mod:`vitkit.demo_sections`.

    Imported on call, so ``import vitkit.demo`` does not import every method package."""
    from .demo_sections import SECTIONS

    return list(SECTIONS)


class _Memo:
    """``fn(batch)`` remembered by the batch's bytes (for protocols that score the same images)."""

    def __init__(self, fn: Callable[[torch.Tensor], object]) -> None:
        self.fn, self.seen = fn, {}

    def __call__(self, x: torch.Tensor):
        key = (tuple(x.shape), hashlib.sha1(x.detach().cpu().numpy().tobytes()).hexdigest())
        if key not in self.seen:
            self.seen[key] = self.fn(x)
        return self.seen[key]

    def part(self, i: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """``x -> self(x)[i]``, for a ``fn`` that returns several outputs."""
        return lambda x: self(x)[i]


def run_demo(cfg: DemoConfig, resume: bool = False) -> dict:
    """Run the whole job; returns the metrics written to ``metrics.json``."""
    from . import save

    if cfg.backbone is not None:
        check_backbone(cfg.backbone)  # before any work: the one line says what to fetch
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    timing: dict[str, float] = {}
    t0 = time.perf_counter()

    # 1. data: the benchmark splits on disk (the paper's JPEG files), training pages in memory at one text scale
    frb.generate(out / "frb", n_train=0, n_val=0, seed=cfg.seed, layout=cfg.layout, progress=cfg.progress)
    page_kw = cfg.page_kwargs()
    train_pages, train_labels = frb_pages(training_pages(cfg, cfg.train_pages, "train"), **page_kw)
    val_pages, val_labels = frb_pages(training_pages(cfg, cfg.val_pages, "val"), **page_kw)
    timing["data_s"] = time.perf_counter() - t0

    # 2. train on ink crops; validate on fixed crops of the validation pages
    t1 = time.perf_counter()
    model, result = train_crop_classifier(cfg, train_pages, train_labels, val_pages, val_labels, resume=resume)
    timing["train_s"] = time.perf_counter() - t1
    model.eval()
    model.pipeline = cfg.policy()  # saved with the model: `vitkit predict` reads pages as below
    save(model, out / "model")

    # 3. evaluate every protocol that applies to a classifier, through the saved page pipeline
    t2 = time.perf_counter()
    clf = page_classifier(model)
    k = cfg.eval_stride
    easy, hard = frb.easy_split(cfg.layout)[::k], frb.hard_split(cfg.layout)[::k]
    # pages differ in size (canvases cut to the text): one page per call
    kw = dict(transform=pil_to_tensor, batch_size=1)
    results: dict[str, dict] = {"classifier": {}, "multiple_choice": {}, "few_shot": {}}
    letters = letter_exemplars(layout=cfg.layout)[::k]
    letter_embeds = embed_samples(clf.embed, letters, **kw)
    for name, split in (("easy", easy), ("hard", hard)):
        # the three protocols score the same pages: one pass over each page's tiles gives logits and features
        both = _Memo(clf.logits_and_embeddings)
        logits, feats = both.part(0), both.part(1)
        results["classifier"][name] = evaluate_classifier(logits, split, **kw)
        results["multiple_choice"][name] = evaluate_multiple_choice(logits, split, n_options=4, seed=cfg.seed, **kw)
        results["few_shot"][name] = evaluate_few_shot(feats, split, letters, exemplar_embeds=letter_embeds, k=5, **kw)
    timing["eval_s"] = time.perf_counter() - t2
    robustness: dict[str, dict[str, float]] = {}
    if cfg.robustness:
        t3 = time.perf_counter()
        for variant in VARIANTS:
            robustness[variant] = {
                name: evaluate_classifier(clf, variant_split(split, variant), **kw).accuracy
                for name, split in (("easy", easy), ("hard", hard))
            }
        timing["robustness_s"] = time.perf_counter() - t3
    timing["total_s"] = time.perf_counter() - t0

    metrics = {
        "frb": {
            name: {
                "accuracy": results["classifier"][name].accuracy,
                "multiple_choice_accuracy": results["multiple_choice"][name].accuracy,
                "few_shot_accuracy": results["few_shot"][name].accuracy,
                "per_font": results["classifier"][name].per_class,
                # one font name per scored page, in the order of OUT/frb/<split>.jsonl (every eval_stride-th line)
                "predictions": [frb.FONT_NAMES[p] for p in results["classifier"][name].predictions],
            }
            for name in ("easy", "hard")
        },
        "layout": cfg.layout,
        "robustness": robustness,
        "paper": PAPER_RESULTS,
        "train": {"steps": result.steps, "crops_seen": result.steps * cfg.batch_size,
                  "final_loss": next((h["loss"] for h in reversed(result.history) if "loss" in h), None)},
        "timing": timing,
        "config": asdict(cfg),
        "vitkit_version": __version__,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))

    # 4. one section per method package (token reduction, quantization, OOD …), each a function of the run.
    # A failing section is reported in the page and the log, never lost with the rest of the run.
    extra: list[Section] = []
    ctx = DemoContext(cfg, out, model, clf, train_pages, train_labels, val_pages, val_labels, easy, hard, metrics)
    for name, build in extra_sections() if cfg.sections else []:
        t = time.perf_counter()
        try:
            extra.append(build(ctx))
        except Exception as e:  # noqa: BLE001 - one broken section must not lose the report
            log.exception("demo section %r failed", name)
            extra.append(Section(make_id(name), f"{name} (failed)", f"<p>This section failed: {escape(repr(e))}</p>"))
        timing[f"section_{name}_s"] = time.perf_counter() - t
    timing["total_s"] = time.perf_counter() - t0
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))

    # 5. the report
    report = Report("vitkit demo — Font Recognition Benchmark")
    headline = {f"FRB {n}": {"accuracy": metrics["frb"][n]["accuracy"],
                             "multiple choice (4)": metrics["frb"][n]["multiple_choice_accuracy"],
                             "few-shot retrieval": metrics["frb"][n]["few_shot_accuracy"]} for n in ("easy", "hard")}
    report.add(summary_section(
        {**headline, "time (s)": {k: round(v, 1) for k, v in timing.items()}},
        notes=[
            f"FRB in the {cfg.layout!r} layout. {_model_note(cfg, model)} for {result.steps} steps on "
            f"{cfg.train_pages} rendered training pages; every page is brought to one text scale and classified by "
            f"averaging the crop predictions over the tiles that contain ink{model.pipeline.readings_note()}.",
        ],
    ))
    report.add(paper_section(metrics))
    if robustness:
        report.add(robustness_section(metrics))
    report.add(training_section(result.history))
    names = {"classifier": "Classifier", "multiple_choice": "Multiple choice (4 options)",
             "few_shot": "Few-shot retrieval (52 letters per font)"}
    for key, title in names.items():
        report.add(protocol_section(title, results[key], id=key.replace("_", "-")))
    pred = results["classifier"]["hard"].predictions
    pick = list(range(0, len(hard), max(1, len(hard) // 24)))[:24]
    report.add(samples_section(
        "Sample predictions (hard split)", [hard[i].image for i in pick],
        [hard[i].font for i in pick], [frb.FONT_NAMES[pred[i]] for i in pick], ncols=4, id="samples",
    ))
    for section in extra:
        report.add(section)
    path = report.write(out / "report.html")
    log.info("report: %s", path)
    return metrics


def _model_note(cfg: DemoConfig, model: VisionTransformer) -> str:
    """What was trained, for the report's summary."""
    if cfg.backbone is None:
        return (f"A ViT ({cfg.depth} blocks, width {cfg.dim}, patch {cfg.patch} on {cfg.crop}×{cfg.crop} crops) "
                "trained from scratch")
    return (f"The pretrained backbone {cfg.backbone} ({model.depth} blocks, width {model.embed_dim}, patch "
            f"{model.patch_size} on {cfg.crop}×{cfg.crop} crops) with a fresh 15-way head, fine-tuned end to end "
            f"at lr {cfg.lr:g}, batch {cfg.batch_size}")


def paper_section(metrics: dict) -> Section:
    """vitkit's row beside the paper's published rows (each protocol the paper reports for each model)."""
    protocols = {"zero_shot": "zero-shot", "zero_shot_cot": "zero-shot CoT", "multiple_choice": "multiple choice (4)"}
    rows = []
    for model, splits in metrics["paper"].items():
        for key, label in protocols.items():
            if key in splits["easy"]:
                rows.append([f"{model} (paper)", label, f"{splits['easy'][key]:.2%}", f"{splits['hard'][key]:.2%}"])
    frb_m = metrics["frb"]
    for key, label in (("accuracy", "classifier (15-way)"), ("multiple_choice_accuracy", "multiple choice (4)"),
                       ("few_shot_accuracy", "few-shot retrieval (52 letters)")):
        rows.append(["vitkit demo ViT", label, f"{frb_m['easy'][key]:.2%}", f"{frb_m['hard'][key]:.2%}"])
    note = (f"<p>The paper's rows are its published figures for vision-language models asked in words; vitkit's row is "
            f"a small ViT trained for this task, scored on the same images in the {escape(metrics['layout'])!s} layout "
            "(a different kind of model, so this shows what a specialist reaches, not a like-for-like contest).</p>")
    return Section("paper", "Beside the paper's published rows",
                   note + table(["model", "protocol", "easy", "hard"], rows, numeric=False))


def robustness_section(metrics: dict) -> Section:
    """Accuracy of the page classifier on clean and transformed benchmark pages."""
    frb_m = metrics["frb"]
    rows = [["clean", f"{frb_m['easy']['accuracy']:.2%}", f"{frb_m['hard']['accuracy']:.2%}"]]
    rows += [[name, f"{r['easy']:.2%}", f"{r['hard']:.2%}"] for name, r in metrics["robustness"].items()]
    return Section("robustness", "Robustness of the page classifier",
                   "<p>The benchmark's own pages, rescaled (Lanczos), inverted (white on black) or recompressed as "
                   "JPEG quality 30, read through the same saved page pipeline.</p>"
                   + table(["pages", "easy", "hard"], rows, numeric=False))
