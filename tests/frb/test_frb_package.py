"""The ``vitkit.frb`` package: its public data API, and the seam that ``vitkit.load`` imports."""

from __future__ import annotations

import subprocess
import sys

import vitkit.frb as frb_module
from vitkit import frb
from vitkit.frb import training


def test_package_exposes_the_data_api():
    assert frb is frb_module
    for name in frb.__all__:
        assert hasattr(frb, name), name
    assert len(frb.FONT_NAMES) == 15 and frb.FONTS_DIR.name == "fonts" and frb.FONTS_DIR.parent.name == "frb"
    assert (frb.FONTS_DIR / "fonts.json").is_file() and all(f.path.is_file() for f in frb.FONTS)


def test_import_vitkit_loads_the_page_classifier_but_not_the_training_code():
    """``vitkit.weights.load`` restores a model's PagePolicy from ``vitkit.frb.classifier``, so ``import vitkit``
    runs ``vitkit.frb.__init__``: it must not import the recipe, the FRB CLIP or the protocols (they import the
    engine and ``vitkit.weights`` back, a cycle at import time). The engine itself may be loaded: post-training
    quantization, whose restorer ``import vitkit`` registers, uses its ``model_device``."""
    code = (
        "import sys, vitkit\n"
        "print([m for m in ('vitkit.frb.recipe', 'vitkit.frb.clip', 'vitkit.frb.protocols') "
        "if m in sys.modules], 'vitkit.frb.classifier' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[] True"


def test_protocol_val_texts_are_the_protocol_split_texts():
    texts = training.protocol_val_texts(3, 2, 4)
    assert texts == training.protocol_val_texts(3, 2, 4) and texts != training.protocol_val_texts(4, 2, 4)
    assert [s for _, s in texts] == ["val-sentence"] * 2 + ["val-title"] * 4
    samples = frb.protocol_val_split(3, 2, 4, layout="canvas440")
    assert [(s.text, s.split) for s in samples[: len(texts)]] == texts
    words = set(frb.TRAINING_WORDS)
    assert all(w.strip(".").lower() in words for t, _ in texts for w in t.split())
