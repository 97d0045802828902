"""Calibration sources behind one interface, and ``quantize``: sources → apply → calibrate.

Sources: ``real`` (a subset of the user's images), ``noise`` (Gaussian), ``psaq`` (patch-similarity
synthesis, :mod:`vitkit.quant.psaq`), ``spdfq`` (attention priors + soft labels + multi-semantic
reinforcement, :mod:`vitkit.quant.spdfq`). Synthetic sources are optimised against the float model,
so they must be produced before the model is quantized; :func:`quantize` takes care of the order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

import torch
from torch import Tensor, nn

from ..registry import Registry
from . import ptq
from .synthetic import as_images, image_parameter

log = logging.getLogger(__name__)

#: name → ``source(model, n, gen, device, *, images, seed, steps, progress, pixel_range, **options)`` →
#: images (n, C, H, W) on ``device``; each takes what it needs. Filled by :func:`register_source`.
CALIBRATION_SOURCES: Registry[Callable[..., Tensor]] = Registry("calibration source")


def register_source(name: str):
    """Decorator: file a calibration-image source under ``name``."""
    return CALIBRATION_SOURCES.register(name)


def check_source(source: str) -> str:
    if source not in CALIBRATION_SOURCES:
        raise ValueError(f"calib={source!r}: unknown calibration source; allowed {CALIBRATION_SOURCES.names()}")
    return source


@register_source("real")
def real_images(model: nn.Module, n: int, gen: torch.Generator, device: torch.device, *, images: Tensor | None = None,
                **_) -> Tensor:
    """A seeded random subset of n of the user's ``images`` (M, C, H, W)."""
    if images is None or len(images) == 0:
        raise ValueError("calib='real' needs calibration images (images=… / --images DIR)")
    idx = torch.randperm(len(images), generator=gen)[:n]
    return images[idx.to(images.device)].to(device)


@register_source("noise")
def noise_images(model: nn.Module, n: int, gen: torch.Generator, device: torch.device, *,
                 pixel_range: tuple[float, float] | None = None, grey: bool = False, **_) -> Tensor:
    """Standard Gaussian images at the model's input size (clamped to ``pixel_range`` if given); ``grey``: one
    channel repeated (:mod:`vitkit.quant.synthetic`)."""
    vcfg = model.cfg
    x = as_images(image_parameter(n, vcfg.in_chans, vcfg.img_size, gen, device, grey).detach(), vcfg.in_chans)
    x = x.contiguous()
    return x.clamp(*pixel_range) if pixel_range is not None else x


@register_source("psaq")
def psaq_images(model: nn.Module, n: int, gen: torch.Generator, device: torch.device, *,
                images: Tensor | None = None, steps: int | None = None, **options) -> Tensor:
    """Patch-similarity synthesis (:mod:`vitkit.quant.psaq`)."""
    from .psaq import PSAQConfig, synthesize

    return synthesize(model, PSAQConfig(n_images=n, **options, **({} if steps is None else {"steps": steps})))


@register_source("spdfq")
def spdfq_images(model: nn.Module, n: int, gen: torch.Generator, device: torch.device, *,
                 images: Tensor | None = None, steps: int | None = None, **options) -> Tensor:
    """Attention priors + soft labels + multi-semantic reinforcement (:mod:`vitkit.quant.spdfq`)."""
    from .spdfq import SPDFQConfig, synthesize

    return synthesize(model, SPDFQConfig(n_images=n, **options, **({} if steps is None else {"steps": steps})))


SOURCES = CALIBRATION_SOURCES.names()


def calibration_images(model: nn.Module, source: str, n: int = 32, *, images: Tensor | None = None, seed: int = 0,
                       steps: int | None = None, progress: bool = False, pixel_range: tuple[float, float] | None = None,
                       **kwargs) -> Tensor:
    """``n`` calibration images (n, C, H, W) at the model's input size from ``source``, on the model's device.

    ``images`` (M, C, H, W) are required for ``real`` (a seeded random subset of n is taken);
    ``steps`` overrides the synthesis steps; ``kwargs`` go to the synthesiser's config
    (:class:`~vitkit.quant.spdfq.SPDFQConfig`, :class:`~vitkit.quant.psaq.PSAQConfig`).
    """
    check_source(source)
    if n < 1:
        raise ValueError(f"n={n}: need at least one calibration image")
    if model.training:
        log.debug("calibration images are produced with the model in eval mode")
    gen = torch.Generator().manual_seed(seed)  # random draws on the CPU (the same on every device), then moved
    device = ptq.model_device(model)
    return CALIBRATION_SOURCES[source](model, n, gen, device, images=images, seed=seed, steps=steps,
                                       progress=progress, pixel_range=pixel_range, **kwargs)


def quantize(model: nn.Module, cfg: ptq.QuantConfig | None = None, source: str = "spdfq", *, n: int = 32,
             images: Tensor | None = None, seed: int = 0, steps: int | None = None, progress: bool = False,
             pixel_range: tuple[float, float] | None = None, **kwargs) -> dict:
    """Calibration images from ``source`` (on the float model), then ``apply`` and ``calibrate``, in place.

    Returns {"modules": names quantized, "calibration": ptq.calibrate's summary, "images": the images}.
    """
    cfg = replace(cfg) if cfg is not None else ptq.QuantConfig()
    check_source(source)
    model.eval()
    calib = calibration_images(model, source, n, images=images, seed=seed, steps=steps, progress=progress,
                               pixel_range=pixel_range, **kwargs)
    names = ptq.apply(model, cfg)
    summary = ptq.calibrate(model, calib, progress=progress)
    return {"modules": names, "calibration": summary, "images": calib}
