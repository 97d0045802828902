"""``vitkit quantize SOURCE --bits w4a4 --calib spdfq --out DIR``: a thin layer over :mod:`vitkit.quant`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def _read_images(folder: Path, model, limit: int):
    from ..data import load_image, preprocess_batch
    from ..weights.load import default_preprocess

    if not folder.is_dir():
        raise FileNotFoundError(f"--images {folder}: not a directory of images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[: max(limit, 1) * 4]
    if not files:
        raise ValueError(f"--images {folder}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    pp = model.preprocess or default_preprocess(model.cfg, model.cfg.img_size)
    return preprocess_batch([load_image(p) for p in files], pp)


def quantize_cmd(
    source: Annotated[str, typer.Argument(help="Checkpoint dir/file, hf-hub:org/name, or a registry name.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for the quantized checkpoint.")],
    bits: Annotated[str, typer.Option(help="w<N>a<M> with N, M in 2–8: w8a8, w6a6, w4a4 …")] = "w8a8",
    calib: Annotated[str, typer.Option(help="Calibration source: spdfq | real | noise | psaq.")] = "spdfq",
    images: Annotated[Path | None, typer.Option(help="Folder of calibration images (needed for --calib real).")] = None,
    n: Annotated[int, typer.Option("--n", min=1, help="Calibration images.")] = 32,
    steps: Annotated[int | None, typer.Option(min=0, help="Synthesis steps (spdfq 1000, psaq 500).")] = None,
    recon_steps: Annotated[int, typer.Option(min=0, help="Block-reconstruction steps per block.")] = 100,
    int8: Annotated[bool, typer.Option(help="For w8a8: write real int8 layers (else fake-quantized).")] = True,
    seed: Annotated[int, typer.Option(help="Seed of the calibration source.")] = 0,
    threads: Annotated[int, typer.Option(min=1, help="torch CPU threads.")] = 1,
) -> None:
    """Quantize SOURCE to low-bit weights/activations, calibrated on real or synthetic images; write OUT."""
    import time

    import torch
    from rich.table import Table

    from ..cli.common import USER_ERRORS, fail, load_source, out
    from ..models.visiongru import VisionGRU
    from . import QuantConfig, parse_bits, quantize, save_quantized, to_int8
    from .calibrate import check_source

    torch.set_num_threads(threads)
    t = time.perf_counter()
    try:
        w_bits, a_bits = parse_bits(bits)
        check_source(calib)
        if calib == "real" and images is None:
            raise ValueError("--calib real needs --images DIR (a folder of calibration images)")
        model = load_source(source).eval()
        gru = isinstance(model, VisionGRU)
        if not hasattr(model, "blocks") and not gru:
            raise ValueError(f"{source}: only vision transformers and VisionGRU can be quantized "
                             f"(got {type(model).__name__})")
        if gru and recon_steps:
            raise ValueError(f"{source}: block reconstruction works on ViT blocks; quantize a VisionGRU with "
                             "--recon-steps 0")
        real = _read_images(images, model, n) if calib == "real" else None
        cfg = QuantConfig(w_bits=w_bits, a_bits=a_bits, recon_steps=recon_steps)
        info = quantize(model, cfg, calib, n=n, images=real, seed=seed, steps=steps, progress=True)
        fmt = "fake"
        if int8 and (w_bits, a_bits) == (8, 8):
            to_int8(model)
            fmt = "int8"
        save_quantized(model, out_dir)
    except USER_ERRORS as e:
        fail(e)
    size = (out_dir / "model.safetensors").stat().st_size
    table = Table(title=f"vitkit quantize {source}", show_header=False)
    table.add_row("bits", f"W{w_bits}A{a_bits} ({'real int8 layers' if fmt == 'int8' else 'fake-quantized'})")
    table.add_row("calibration", f"{calib}, {len(info['images'])} images, block reconstruction {recon_steps} steps")
    table.add_row("modules", str(len(info["modules"])))
    table.add_row("file", f"{out_dir / 'model.safetensors'} ({size / 1e6:.2f} MB)")
    table.add_row("time", f"{time.perf_counter() - t:.1f} s")
    out.print(table)
