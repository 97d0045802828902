"""Post-training quantization of a vitkit model: wrappers around the original layers.

``apply(model, cfg)`` wraps every target Linear in a :class:`QuantLinear` (the original layer kept as
``base_layer``, as peft does) and hangs a log2 quantizer on each attention's post-softmax map
(``Attention.attn_map_fn``); ``remove(model)`` puts the originals back. ``calibrate(model, images)``
sets activation ranges from calibration images and optionally runs block-wise reconstruction:
minimise ‖block_fp(x_fp) − block_q(x_q)‖² over the quantizers' scales with Adam, block by block.

A target that is itself a wrapper with a Linear ``base_layer`` (LoRA) has its inner Linear
quantized; the wrapper's own parameters stay in float.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import config_from_dict
from ..engine import model_device
from ..models.applied import forget, record, record_of, restorer
from ..models.attention import Attention
from ..models.surgery import replace_module
from ..models.wrapper import LayerWrapper, base_of, unwrap
from .quantizers import GRANULARITIES, METHODS, ActQuantizer, Log2Quantizer, WeightQuantizer, check_bits

log = logging.getLogger(__name__)

# every Linear inside the blocks: a ViT's attention and MLP, a VisionGRU's minGRU projections and MLP
METHOD = "quant"
DEFAULT_TARGETS = r"(^|\.)blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(fc1|fc2)|gru_(fwd|rev)\.(proj_in|proj_out))$"


@dataclass
class QuantConfig:
    """What to quantize and how.

    ``targets``: regex over module names (default: every Linear inside the blocks; patch embedding
    or stem and head stay float). ``attn_bits``: log2 quantizer bits for the post-softmax maps (None = same
    as ``a_bits``; 0 = leave the maps float and keep the fused attention path).
    """

    w_bits: int = 8
    a_bits: int = 8
    attn_bits: int | None = None
    w_symmetric: bool = True
    a_symmetric: bool = False
    act_granularity: str = "token"
    calib_method: str = "mse"
    percentile: float = 99.99
    targets: str = DEFAULT_TARGETS
    recon_steps: int = 0
    recon_lr: float = 4e-5
    recon_batch: int = 8

    def __post_init__(self) -> None:
        check_bits(self.w_bits, "w_bits")
        check_bits(self.a_bits, "a_bits")
        if self.attn_bits is None:
            self.attn_bits = self.a_bits
        if self.attn_bits != 0:
            check_bits(self.attn_bits, "attn_bits")
        if self.act_granularity not in GRANULARITIES[1:]:
            raise ValueError(f"act_granularity={self.act_granularity!r}: allowed {GRANULARITIES[1:]}")
        if self.calib_method not in METHODS:
            raise ValueError(f"calib_method={self.calib_method!r}: allowed {METHODS}")
        if not 50 < self.percentile <= 100:
            raise ValueError(f"percentile={self.percentile}: must be in (50, 100]")
        if self.recon_steps < 0 or self.recon_batch < 1 or self.recon_lr <= 0:
            raise ValueError("recon_steps must be ≥ 0, recon_batch ≥ 1 and recon_lr > 0")
        try:
            re.compile(self.targets)
        except re.error as e:
            raise ValueError(f"targets={self.targets!r} is not a valid regular expression ({e})") from e

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> QuantConfig:
        return config_from_dict(cls, d)


class QuantLinear(LayerWrapper):
    """Fake-quantized Linear: y = Q_a(x) · Q_w(W)ᵀ + b. x (…, in) → (…, out). Keeps ``base_layer``;
    ``weight`` / ``bias`` read the float values (adapters, FLOP counters)."""

    def __init__(self, base_layer: nn.Linear, cfg: QuantConfig) -> None:
        super().__init__(base_layer)
        self.weight_quantizer = WeightQuantizer(cfg.w_bits, cfg.w_symmetric, cfg.calib_method)
        self.input_quantizer = ActQuantizer(cfg.a_bits, cfg.act_granularity, cfg.a_symmetric, cfg.calib_method,
                                            cfg.percentile).to(base_layer.weight.device)
        with torch.no_grad():
            self.weight_quantizer.calibrate(base_layer.weight)

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight_quantizer(self.base_layer.weight)
        return F.linear(self.input_quantizer(x), w, self.base_layer.bias)


def config(model: nn.Module) -> QuantConfig | None:
    """The QuantConfig ``model`` was quantized with (its applied-methods record), or None."""
    return record_of(model).get(METHOD)


def apply(model: nn.Module, cfg: QuantConfig | None = None) -> list[str]:
    """Wrap the target Linears (and attention maps) of ``model`` in quantizers; returns the names touched.

    Raises ValueError when nothing matched, when the model is already quantized, or when a target is
    neither a Linear nor a wrapper around one (it is never skipped silently).
    """
    cfg = cfg or QuantConfig()
    if any(isinstance(m, QuantLinear) for m in model.modules()):
        raise ValueError("model is already quantized: call vitkit.quant.remove(model) first")
    pattern = re.compile(cfg.targets)
    touched: list[str] = []
    for name, mod in list(model.named_modules()):
        if not name or not pattern.search(name):
            continue
        if isinstance(mod, nn.Linear):
            replace_module(model, name, QuantLinear(mod, cfg))
            touched.append(name)
        elif isinstance(base_of(mod), nn.Linear):  # an adapter wrapper (LoRA)
            mod.base_layer = QuantLinear(mod.base_layer, cfg)
            touched.append(f"{name}.base_layer")
            log.info("%s is a %s wrapper: quantizing its base_layer", name, type(mod).__name__)
        else:
            raise ValueError(
                f"module {name!r} matches targets={cfg.targets!r} but is a {type(mod).__name__}: only nn.Linear "
                "or wrappers with a Linear `base_layer` can be quantized; narrow `targets`"
            )
    if not touched:
        raise ValueError(f"no module of {type(model).__name__} matches targets={cfg.targets!r}")
    if cfg.attn_bits:
        for name, mod in model.named_modules():
            if isinstance(mod, Attention):
                if mod.attn_map_fn is not None:
                    raise ValueError(f"{name}.attn_map_fn is already set by another method; remove it first")
                mod.attn_map_fn = Log2Quantizer(cfg.attn_bits).to(model_device(mod))
                touched.append(f"{name}.attn_map_fn")
    record(model, METHOD, cfg)
    log.info("quantized %d modules to W%dA%d (attention maps: %s)", len(touched), cfg.w_bits, cfg.a_bits,
             f"log2 {cfg.attn_bits}-bit" if cfg.attn_bits else "float")
    return touched


def remove(model: nn.Module) -> list[str]:
    """Undo :func:`apply`: put every original layer back; returns the names restored."""
    restored: list[str] = []
    for name, mod in list(model.named_modules()):
        if isinstance(mod, QuantLinear):
            unwrap(model, name)
            restored.append(name)
        elif isinstance(mod, Attention) and isinstance(mod.attn_map_fn, Log2Quantizer):
            mod.attn_map_fn = None
            restored.append(f"{name}.attn_map_fn")
    if not restored:
        raise ValueError(f"{type(model).__name__} has no quantized modules to remove")
    forget(model, METHOD)
    return restored


def quantizer_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(name, quantizer) for every weight, activation and attention-map quantizer in ``model``."""
    for name, mod in model.named_modules():
        if isinstance(mod, (WeightQuantizer, ActQuantizer, Log2Quantizer)):
            yield name, mod


@contextmanager
def quant_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` as float inside the ``with`` (quantizers pass values through)."""
    qs = [q for _, q in quantizer_modules(model)]
    saved = [q.enabled for q in qs]
    for q in qs:
        q.enabled = False
    try:
        yield model
    finally:
        for q, s in zip(qs, saved, strict=True):
            q.enabled = s


def image_batches(images: Tensor, batch_size: int) -> Iterator[Tensor]:
    for i in range(0, len(images), batch_size):
        yield images[i : i + batch_size]


@contextmanager
def frozen(model: nn.Module, eval_mode: bool = False) -> Iterator[nn.Module]:
    """Inside: every parameter of ``model`` has ``requires_grad=False`` (and, with ``eval_mode``, the
    model is in eval mode), for optimising inputs or a chosen few tensors; both restored on exit."""
    was_training = model.training
    grads = {p: p.requires_grad for p in model.parameters()}
    if eval_mode:
        model.eval()
    for p in grads:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, g in grads.items():
            p.requires_grad_(g)
        if eval_mode:
            model.train(was_training)


@torch.no_grad()
def calibrate_ranges(model: nn.Module, images: Tensor, batch_size: int = 32) -> int:
    """Observe float activations on ``images`` (B, 3, H, W) and set every activation quantizer's range."""
    acts = [q for _, q in quantizer_modules(model) if isinstance(q, (ActQuantizer, Log2Quantizer))]
    if not acts:
        raise ValueError("model has no activation quantizers: call vitkit.quant.apply(model, cfg) first")
    if len(images) == 0:
        raise ValueError("calibration images are empty")
    was_training = model.training
    model.eval()
    dev = model_device(model)
    for q in acts:
        q.observing = True
    try:
        for x in image_batches(images, batch_size):
            model(x.to(dev))
    finally:
        for q in acts:
            q.observing = False
        model.train(was_training)
    for q in acts:
        q.finish()
    return len(acts)


def _recon_params(block: nn.Module) -> list[nn.Parameter]:
    ps = []
    for _, q in quantizer_modules(block):
        if isinstance(q, WeightQuantizer) or isinstance(q, Log2Quantizer):
            ps.append(q.scale)
        elif isinstance(q, ActQuantizer):
            ps.append(q.clip if q.granularity == "token" else q.scale)
    return ps


def reconstruct_blocks(model: nn.Module, images: Tensor, steps: int = 100, lr: float = 4e-5, batch_size: int = 8,
                       seed: int = 0, progress: bool = False) -> list[dict]:
    """Block-wise reconstruction of a quantized ViT (needs ``model.embed`` and ``model.blocks``).

    For block l: target = block_fp(x_fp) (quantizers off, float input), output = block_q(x_q) (quantized
    input from the already reconstructed blocks); Adam on the block's quantizer scales for ``steps``
    steps on random mini-batches. A block whose full-batch error got worse keeps its previous scales.
    Returns per-block {"block", "mse_before", "mse_after"}.
    """
    from ..progress import progress_bar

    if not hasattr(model, "blocks") or not hasattr(model, "embed"):
        raise ValueError(f"block reconstruction needs a VisionTransformer, got {type(model).__name__}")
    gen = torch.Generator().manual_seed(seed)  # on the CPU: the same index stream on every device
    model.eval()
    with torch.no_grad():
        x_fp, _ = model.embed(images.to(model_device(model)))  # patch embedding stays float: same input for both
    x_q = x_fp.clone()
    out: list[dict] = []
    with frozen(model), progress_bar(progress) as bar:
        task = bar.add_task("block reconstruction", total=len(model.blocks) * steps)
        for i, block in enumerate(model.blocks):
            with torch.no_grad(), quant_disabled(block):
                target = block(x_fp)
            params = _recon_params(block)
            with torch.no_grad():
                before = F.mse_loss(block(x_q), target).item()
            saved = [p.detach().clone() for p in params]
            after = before
            if params and steps:
                for p in params:
                    p.requires_grad_(True)
                opt = torch.optim.Adam(params, lr=lr)
                for _ in range(steps):
                    idx = torch.randint(len(x_q), (min(batch_size, len(x_q)),), generator=gen).to(x_q.device)
                    loss = F.mse_loss(block(x_q[idx]), target[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    with torch.no_grad():
                        for p in params:
                            p.clamp_(min=1e-8)
                    bar.advance(task)
                for p in params:
                    p.requires_grad_(False)
                with torch.no_grad():
                    after = F.mse_loss(block(x_q), target).item()
                    if not after <= before:
                        for p, s in zip(params, saved, strict=True):
                            p.copy_(s)
                        after = before
            out.append({"block": i, "mse_before": before, "mse_after": after})
            log.info("block %d: reconstruction mse %.3g → %.3g", i, before, after)
            with torch.no_grad():
                x_q = block(x_q)
                x_fp = target
    return out


def calibrate(model: nn.Module, images: Tensor, *, batch_size: int = 32, recon_steps: int | None = None,
              progress: bool = False) -> dict:
    """Activation ranges from ``images`` (B, 3, H, W), then block reconstruction if ``recon_steps`` > 0.

    ``recon_steps`` None = the ``recon_steps`` of the model's QuantConfig.
    """
    cfg: QuantConfig = config(model) or QuantConfig()
    n = calibrate_ranges(model, images, batch_size)
    steps = cfg.recon_steps if recon_steps is None else recon_steps
    recon = reconstruct_blocks(model, images, steps, cfg.recon_lr, cfg.recon_batch, progress=progress) if steps else []
    return {"activation_quantizers": n, "reconstruction": recon}


def mark_calibrated(model: nn.Module) -> None:
    """Every quantizer in ``model`` counts as calibrated (its scales were loaded from a checkpoint)."""
    for _, q in quantizer_modules(model):
        q.ready = True


@restorer(METHOD, QuantConfig, loaded=mark_calibrated)
def restore(model: nn.Module, cfg: QuantConfig, instance: str | None = None) -> None:
    """Re-wire a saved fake-quantized model (its scales are loaded after, by :func:`vitkit.load`)."""
    apply(model, cfg)
