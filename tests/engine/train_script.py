"""A tiny training run used by the engine tests in subprocesses (SIGKILL/resume, torchrun/DDP).

usage: python train_script.py OUT_DIR [--resume] [--kill-at STEP] [--accum A] [--batch B]
Writes OUT_DIR/final.safetensors with the final weights.
"""

import argparse
import os
import signal

import torch
from safetensors.torch import save_file
from torch.utils.data import TensorDataset

from vitkit.engine.trainer import TrainConfig, Trainer
from vitkit.models import VisionTransformer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--kill-at", type=int, default=None)
    ap.add_argument("--accum", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--dropout", type=float, default=0.1)
    args = ap.parse_args()

    g = torch.Generator().manual_seed(123)
    x = torch.randn(48, 3, 16, 16, generator=g)
    y = (x[:, 0].mean((1, 2)) > 0).long()
    torch.manual_seed(0)
    model = VisionTransformer(img_size=16, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=2,
                              drop_rate=args.dropout, drop_path_rate=args.dropout)
    cfg = TrainConfig(epochs=3, batch_size=args.batch, lr=3e-3, warmup_steps=3, accum_steps=args.accum,
                      ckpt_every=4, log_every=2, out_dir=args.out, progress=False)

    def loss_fn(net, batch):
        if args.kill_at is not None and trainer.step == args.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # mid-epoch, after the step-4 checkpoint
        return torch.nn.functional.cross_entropy(net(batch[0]), batch[1], label_smoothing=0.1)

    trainer = Trainer(model, TensorDataset(x, y), cfg, loss_fn=loss_fn,
                      eval_fn=lambda m: {"acc": (m(x).argmax(-1) == y).float().mean().item()})
    trainer.fit(resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(args.out, "final.safetensors"))


if __name__ == "__main__":
    main()
