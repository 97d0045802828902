"""Score a demo-style FRB model on the protocol validation split (model selection without the test).

``frb.protocol_val_split`` renders training-vocabulary text exactly like FRB easy (sentences) and
hard (1-3 title-case words) of a layout: the same canvas, size, padding and renderer, never a
benchmark text. Use it to choose training settings; report easy/hard only for the chosen one. The
model reads pages through its saved page pipeline (tiles at its crop size without one).

    python benchmarks/frb_val.py runs/demo/model [--seed 0] [--layout paper] [--threads 2]
"""

from __future__ import annotations

import argparse
import json

import torch

import vitkit
from vitkit import frb
from vitkit.frb.classifier import TiledClassifier
from vitkit.frb.ink import pil_to_tensor
from vitkit.frb.protocols import evaluate_classifier
from vitkit.predict import page_classifier


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a vitkit checkpoint folder, e.g. runs/demo/model")
    ap.add_argument("--seed", type=int, default=0, help="seed of the validation texts")
    ap.add_argument("--layout", choices=frb.LAYOUTS, default="paper", help="FRB layout the texts are rendered in")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = vitkit.load(args.model).eval()
    size = model.cfg.img_size[0]
    clf = page_classifier(model) or TiledClassifier(model, size=size, stride=size // 2).eval()
    val = frb.protocol_val_split(args.seed, layout=args.layout)
    out = {}
    for split in ("val-sentence", "val-title"):
        r = evaluate_classifier(clf, [s for s in val if s.split == split], transform=pil_to_tensor, batch_size=1,
                                progress=False)
        off = [(int(r.confusion[i, j]), r.class_names[i], r.class_names[j]) for i in range(len(r.class_names))
               for j in range(len(r.class_names)) if i != j and r.confusion[i, j]]
        out[split] = {"accuracy": r.accuracy, "below_100": {k: v for k, v in r.per_class.items() if v < 1},
                      "top_confusions": sorted(off, reverse=True)[:4]}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
