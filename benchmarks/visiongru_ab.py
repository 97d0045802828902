#!/usr/bin/env python
"""VisionGRU before/after in one process: the model code of a git commit against the working tree's.

The commit's ``mingru.py`` and ``visiongru.py`` are read with ``git show`` and loaded as extra modules of
``vitkit.models`` (so their relative imports resolve to this tree's other modules); both models get the
same weights (the state_dict keys are unchanged). Reported, for ``visiongru_micro`` at ``--size``:

* the largest difference of the logits (eval mode, inference);
* inference time at batch 1, interleaved with the ViT of the same size (fused attention), medians;
* peak tensor memory of one inference forward (torch profiler's allocation events: allocator- and
  RSS-independent, unlike the cost stage of ``visiongru.py``), also for the ViT with fused and with
  materialised attention;
* with ``--train B``: the time of a training step (forward + backward, cross-entropy, batch B),
  interleaved.

Example::

    python benchmarks/visiongru_ab.py --before f1c94dc --size 1024 --repeats 5 --train 8 --train-size 224
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import types

import torch
import torch.nn.functional as F

from vitkit.bench.timing import interleaved, median, peak_tensor_mib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from visiongru import NUM_CLASSES, build  # noqa: E402


def load_commit(commit: str) -> types.ModuleType:
    """``vitkit.models.visiongru`` as it was at ``commit`` (with that commit's minGRU), as a new module."""
    mods = {}
    for name in ("mingru", "visiongru"):
        src = subprocess.check_output(["git", "show", f"{commit}:src/vitkit/models/{name}.py"], text=True)
        src = src.replace("from .mingru import", "from .mingru_before import")
        mod = types.ModuleType(f"vitkit.models.{name}_before")
        mod.__package__ = "vitkit.models"
        sys.modules[mod.__name__] = mod
        exec(compile(src, f"{commit}:{name}.py", "exec"), mod.__dict__)
        mods[name] = mod
    return mods["visiongru"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--before", default="f1c94dc", help="git commit of the 'before' model code")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--train", type=int, default=0, help="also time a training step at this batch (0: no)")
    p.add_argument("--train-size", type=int, default=224)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    old = load_commit(args.before)
    torch.manual_seed(0)
    after = build("gru", "micro")
    fields = old.VisionGRUConfig.__dataclass_fields__
    before = old.VisionGRU(old.VisionGRUConfig(**{k: v for k, v in after.cfg.to_dict().items() if k in fields}))
    before.load_state_dict(after.state_dict())
    models = {"after": after.eval(), "before": before.eval(), "vit": build("vit", "micro").eval()}
    x = torch.randn(1, 3, args.size, args.size)
    print(f"{args.size} px, before = {args.before}, load {os.getloadavg()}")
    with torch.inference_mode():
        diff = (models["after"](x) - models["before"](x)).abs().max().item()
        print(f"max |logits after − before| = {diff:.2e}")
        t = interleaved({k: (lambda m=m: m(x)) for k, m in models.items()}, args.repeats)
        med = {k: median(v) for k, v in t.items()}
        print("inference s/img (median of", args.repeats, "interleaved):", {k: round(v, 4) for k, v in med.items()},
              f"after/before {med['after'] / med['before']:.3f}, after/vit {med['after'] / med['vit']:.3f}, "
              f"before/vit {med['before'] / med['vit']:.3f}")
        models["vit_eager"] = build("vit_eager", "micro").eval()
        peak = {k: peak_tensor_mib(lambda m=m: m(x)) for k, m in models.items()}
    print("peak tensor MiB:", {k: round(v, 1) for k, v in peak.items()},
          f"after/vit {peak['after'] / peak['vit']:.3f}, after/vit_eager {peak['after'] / peak['vit_eager']:.3f}")
    if args.train:
        xb = torch.randn(args.train, 3, args.train_size, args.train_size)
        yb = torch.randint(NUM_CLASSES, (args.train,))

        def step(m: torch.nn.Module) -> None:
            F.cross_entropy(m(xb), yb).backward()
            m.zero_grad(set_to_none=True)

        train = {k: models[k].train() for k in ("after", "before", "vit")}
        t = interleaved({k: (lambda m=m: step(m)) for k, m in train.items()}, args.repeats)
        med = {k: median(v) for k, v in t.items()}
        print(f"training step, batch {args.train} at {args.train_size} px, s (median):",
              {k: round(v, 3) for k, v in med.items()}, f"after/before {med['after'] / med['before']:.3f}")
    print(f"load {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
