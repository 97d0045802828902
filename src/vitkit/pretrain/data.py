"""Pretraining datasets: item i → (image (3, S, S) float32 in [0, 1], region ids (S, S) int64).

* :class:`SceneRegions`: rendered scenes with their part maps (exact regions);
* :class:`PageRegions`: FRB training pages (resized to S × S) with word or line boxes measured on the
  rendered page (:func:`~.regions.page_regions`);
* :class:`PageCropRegions`: S × S crops of FRB training pages at a readable text scale with their word maps
  (:func:`~.page_manip.page_crop`, the images the page-crop manipulation detector sees);
* :class:`FolderRegions`: a user's images (``*.png``/``*.jpg``) with optional PNG id maps of the same
  stem in another folder; without maps every pixel is region 0 (CRFR-P then masks uniformly).

Items depend only on the index (the trainer's exact resume needs that).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from ..data.images import load_image
from ..data.scenes import render_scene
from .page_manip import page_crop
from .regions import page_regions, read_id_map, relabel, resize_map

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def to_tensors(image: np.ndarray, regions: np.ndarray) -> tuple[Tensor, Tensor]:
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)
    return x, torch.from_numpy(np.ascontiguousarray(regions).astype(np.int64))


class SceneRegions(Dataset):
    """Scenes ``start … start+n−1`` of ``seed`` at ``size`` px with their part maps as regions."""

    def __init__(self, n: int, *, seed: int = 0, size: int = 64, start: int = 0, cache: bool = True) -> None:
        if n < 1:
            raise ValueError(f"SceneRegions needs n ≥ 1, got {n}")
        self.n, self.seed, self.size, self.start = n, seed, size, start
        self._cache: dict[int, tuple[Tensor, Tensor]] | None = {} if cache else None  # rendered once per run

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        s = render_scene(self.seed, self.start + i, size=self.size)
        item = to_tensors(s.image, s.parts)
        if self._cache is not None:
            self._cache[i] = item
        return item


class PageRegions(Dataset):
    """FRB training pages ``i`` of ``seed`` resized to ``size × size``, regions = word or line boxes."""

    def __init__(self, n: int, *, seed: int = 0, size: int = 64, level: str = "word") -> None:
        if level not in ("word", "line"):
            raise ValueError(f"level must be 'word' or 'line', got {level!r}")
        if n < 1:
            raise ValueError(f"PageRegions needs n ≥ 1, got {n}")
        self.n, self.seed, self.size, self.level = n, seed, size, level

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        from .. import frb

        page = np.asarray(frb.train_sample(i, self.seed).image.convert("RGB"))
        ids = page_regions(page, self.level)
        img = np.asarray(Image.fromarray(page).resize((self.size, self.size), Image.BILINEAR))
        return to_tensors(img, resize_map(ids, (self.size, self.size)))


class PageCropRegions(Dataset):
    """Crops ``start … start+n−1`` of FRB training pages of ``seed`` (:func:`~.page_manip.page_crop`): the text
    at a core height of size/8 px, so a few whole words are in view; regions = the words."""

    def __init__(self, n: int, *, seed: int = 0, size: int = 64, start: int = 0, cache: bool = True) -> None:
        if n < 1:
            raise ValueError(f"PageCropRegions needs n ≥ 1, got {n}")
        self.n, self.seed, self.size, self.start = n, seed, size, start
        self._cache: dict[int, tuple[Tensor, Tensor]] | None = {} if cache else None

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        c = page_crop(self.seed, self.start + i, self.size)
        item = to_tensors(c.image, c.words)
        if self._cache is not None:
            self._cache[i] = item
        return item


class FolderRegions(Dataset):
    """Images in ``images`` (sorted by name), resized to ``size × size``; region maps ``maps/STEM.png``."""

    def __init__(self, images: str | Path, maps: str | Path | None = None, *, size: int = 64) -> None:
        self.root = Path(images)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: no such folder of images")
        self.files = sorted(p for p in self.root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise ValueError(f"{self.root}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        self.maps = Path(maps) if maps is not None else None
        if self.maps is not None:
            if not self.maps.is_dir():
                raise FileNotFoundError(f"{self.maps}: no such folder of region maps")
            missing = [p.stem for p in self.files if not (self.maps / f"{p.stem}.png").is_file()]
            if missing:
                raise ValueError(f"{self.maps}: no region map for {len(missing)} image(s), e.g. {missing[0]}.png; "
                                 "give one PNG id map per image, named after the image")
        self.size = size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        img = load_image(self.files[i]).convert("RGB").resize((self.size, self.size), Image.BILINEAR)
        if self.maps is None:
            ids = np.zeros((self.size, self.size), np.int64)
        else:
            ids = relabel(resize_map(read_id_map(self.maps / f"{self.files[i].stem}.png"), (self.size, self.size)))
        return to_tensors(np.asarray(img), ids)


def pretrain_dataset(data: str, *, n: int, seed: int, size: int, region_maps: str | None = None,
                     level: str = "word") -> Dataset:
    """``data``: "scenes", "frb" (whole pages), "frb-crops" (page crops) or a folder of images (``region_maps``: its
    folder of PNG id maps)."""
    if data == "scenes":
        if region_maps:
            raise ValueError("--region-maps is for a folder of images; scenes bring their own part maps")
        return SceneRegions(n, seed=seed, size=size)
    if data == "frb":
        if region_maps:
            raise ValueError("--region-maps is for a folder of images; FRB pages bring their own word boxes")
        return PageRegions(n, seed=seed, size=size, level=level)
    if data == "frb-crops":
        if region_maps:
            raise ValueError("--region-maps is for a folder of images; FRB page crops bring their own word maps")
        return PageCropRegions(n, seed=seed, size=size)
    if not Path(data).is_dir():
        raise FileNotFoundError(f"--data {data}: neither 'scenes', 'frb', 'frb-crops' nor a folder of images")
    return FolderRegions(data, region_maps, size=size)
