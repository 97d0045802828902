"""One description of the machine a figure was measured on: a dict for the JSON, a line for the table.

Every benchmark records the same keys, so a table regenerated from any benchmark's JSON names the
machine the same way. The CPU model comes from ``/proc/cpuinfo`` (``platform.processor()`` says only
"x86_64" on Linux).
"""

from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = ["KEYS", "cpu_model", "describe", "device_text", "line", "load_avg"]

#: the keys :func:`describe` always writes
KEYS = ("date", "host", "cpu", "cpu_count", "usable_cores", "threads", "platform", "python", "torch", "cuda", "device",
        "gpu", "load_avg")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else ``platform.processor()`` or the architecture."""
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                return ln.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_avg() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages (rounded), None where the OS has none."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def describe(device: torch.device | str = "cpu", threads: int | None = None, **extra) -> dict:
    """Machine, versions and settings: the :data:`KEYS` (``gpu``: "name, N GiB" on a CUDA device, else
    None; ``threads``: torch's intra-op threads unless given), then ``extra`` (e.g. dtype, batch, preset)."""
    device = torch.device(device)
    info = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "host": platform.node(), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "threads": threads or torch.get_num_threads(), "platform": platform.platform(),
        "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "device": str(device), "gpu": None, "load_avg": load_avg(),
    }
    if device.type == "cuda":
        prop = torch.cuda.get_device_properties(device)
        info["gpu"] = f"{prop.name}, {prop.total_memory / 2**30:.0f} GiB"
    return info | extra


def device_text(info: dict) -> str:
    """"NVIDIA H100 …, 80 GiB" on a GPU, else "CPU (model, N cores, T threads)"."""
    return info.get("gpu") or f"CPU ({info['cpu']}, {info['cpu_count']} cores, {info['threads']} threads)"


def line(info: dict, settings: Sequence[str] = ()) -> str:
    """The table's first line: device; torch and CUDA versions; ``settings``; date; load."""
    return "; ".join([device_text(info), f"torch {info['torch']}, CUDA {info['cuda']}", *settings, info["date"],
                      f"load {info['load_avg']}"])
