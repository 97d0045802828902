"""Image classification datasets on disk: class folders or a JSONL/CSV manifest.

Every image is decoded with the one safe decoder, :func:`vitkit.data.images.load_image`.
Unreadable files are never dropped silently: with ``verify=True`` (the default) each file is
decoded once at construction, bad ones are skipped, listed in ``dataset.skipped`` and reported
in one ``logging`` warning; with ``verify=False`` a bad file raises
:class:`~vitkit.data.images.ImageDecodeError` (naming the file) when it is indexed.

Items are ``(image, label)`` where ``image`` is the RGB ``PIL.Image`` or ``transform(image)``.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from vitkit.data.images import ImageDecodeError, load_image
from vitkit.progress import progress_bar

__all__ = ["IMAGE_EXTENSIONS", "ImageFolderDataset", "ManifestDataset"]

logger = logging.getLogger(__name__)

#: File suffixes :class:`ImageFolderDataset` collects (compared case-insensitively).
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
#: Above this many files, verification shows a progress bar.
PROGRESS_MIN_FILES = 500
#: How many skipped files the warning names.
_WARN_NAMES = 5

Transform = Callable[[Any], Any]


class _FileDataset(Dataset):
    """Shared machinery: ``samples`` of ``(path, label)``, verification, ``__getitem__``."""

    source: Path  # the folder or manifest, for messages
    samples: list[tuple[str, int]]
    skipped: list[tuple[str, str]]

    def __init__(self, source: Path, samples: list[tuple[str, int]], transform: Transform | None,
                 verify: bool) -> None:
        self.source = source
        self.transform = transform
        self.skipped = []
        if not samples:
            raise ValueError(f"{self._kind} {str(source)!r} {self._empty_hint}")
        self.samples = self._verified(samples) if verify else samples

    _kind = "dataset"
    _empty_hint = "has no image files."

    @property
    def targets(self) -> list[int]:
        """The label of every sample, in order."""
        return [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, label = self.samples[index]
        img = load_image(path)  # raises ImageDecodeError naming the file
        return (self.transform(img) if self.transform is not None else img), label

    def _verified(self, samples: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """Decode every file once; keep the readable ones, record the rest in ``skipped``."""
        good: list[tuple[str, int]] = []
        with progress_bar(len(samples) > PROGRESS_MIN_FILES) as bar:
            task = bar.add_task(f"checking {self.source.name}", total=len(samples))
            for path, label in samples:
                try:
                    load_image(path)
                except ImageDecodeError as exc:
                    self.skipped.append((path, exc.problem))
                else:
                    good.append((path, label))
                bar.advance(task)
        if self.skipped:
            self._report_skipped(total=len(samples))
        if not good:
            first_path, first_reason = self.skipped[0]
            raise ValueError(
                f"{self._kind} {str(self.source)!r}: none of its {len(samples)} image files could be "
                f"decoded (first: {self._display(first_path)}: {first_reason}). Check the files."
            )
        return good

    def _report_skipped(self, total: int) -> None:
        shown = "; ".join(f"{self._display(p)} ({reason})" for p, reason in self.skipped[:_WARN_NAMES])
        more = len(self.skipped) - _WARN_NAMES
        logger.warning(
            "Skipped %d of %d image files in %s that cannot be decoded: %s%s. The full list is in "
            "dataset.skipped.",
            len(self.skipped), total, self.source, shown, f"; and {more} more" if more > 0 else "",
        )

    def _display(self, path: str) -> str:
        """``path`` relative to the dataset's folder where possible (shorter messages)."""
        base = self.source if self.source.is_dir() else self.source.parent
        try:
            return Path(path).relative_to(base).as_posix()
        except ValueError:
            return path

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({str(self.source)!r}, {len(self)} images, "
                f"{len(self.skipped)} skipped)")


class ImageFolderDataset(_FileDataset):
    """Images in class sub-folders: ``root/<class>/**/<image>``; the label is the class index.

    Classes are the sorted names of the non-hidden sub-folders of ``root``, or ``classes`` (whose
    order defines the labels; other folders are ignored). Files are collected recursively and
    kept when their suffix is in ``extensions`` (case-insensitive).

    Attributes:
        classes: class names; ``classes[label]`` is the folder name.
        class_to_idx: name -> label.
        samples: ``(path, label)`` of every readable image, sorted by class then path.
        skipped: ``(path, reason)`` of every file that failed verification.

    Raises:
        ValueError: ``root`` is not a folder, a listed class has no folder, there are no image
            files, or none of them can be decoded.
    """

    _kind = "image folder"
    _empty_hint = "has no image files; expected one sub-folder per class, each holding images."

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        transform: Transform | None = None,
        classes: Sequence[str] | None = None,
        extensions: Iterable[str] = IMAGE_EXTENSIONS,
        verify: bool = True,
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise ValueError(f"image folder {str(root)!r} does not exist or is not a directory.")
        self.classes = _find_classes(root, classes)
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        exts = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
        samples = [
            (path, label)
            for label, name in enumerate(self.classes)
            for path in _image_files(root / name, exts)
        ]
        super().__init__(root, samples, transform, verify)
        counts = [0] * len(self.classes)
        for _, label in self.samples:
            counts[label] += 1
        empty = [name for name, n in zip(self.classes, counts, strict=True) if n == 0]
        if empty:
            logger.warning("Image folder %s: %d class(es) have no readable images: %s",
                           root, len(empty), ", ".join(empty[:_WARN_NAMES]))


def _find_classes(root: Path, classes: Sequence[str] | None) -> list[str]:
    found = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if classes is None:
        return found
    classes = list(classes)
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes for {str(root)!r} contain duplicates: {classes}")
    missing = [c for c in classes if not (root / c).is_dir()]
    if missing:
        raise ValueError(f"image folder {str(root)!r} has no sub-folder for class(es) {missing}; "
                         f"its sub-folders are {found}.")
    return classes


def _image_files(folder: Path, exts: tuple[str, ...]) -> list[str]:
    files: list[str] = []
    ignored = 0
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.lower().endswith(exts):
                files.append(os.path.join(dirpath, name))
            elif not name.startswith("."):
                ignored += 1
    if ignored:
        logger.debug("%s: ignored %d files without an image extension", folder, ignored)
    return sorted(files)


class ManifestDataset(_FileDataset):
    """Images listed in a manifest: JSON lines (``.jsonl``/``.ndjson``) or CSV with a header.

    Each record gives an image path (``path_key``; relative paths are resolved against ``root``,
    default the manifest's folder) and a non-negative integer label (``label_key``). Blank lines
    are ignored. This reads the manifests that :func:`vitkit.frb.write_split` writes.

    Attributes:
        manifest: the manifest path.
        samples: ``(path, label)`` of every readable image, in manifest order.
        skipped: ``(path, reason)`` of every file that failed verification (missing files too).

    Raises:
        ValueError: unknown manifest suffix; a malformed line, a missing key or a bad label (the
            message names the manifest and the line number); no records; none decodable.
    """

    _kind = "manifest"
    _empty_hint = "lists no images; expected one record (path and label) per image."

    def __init__(
        self,
        manifest: str | os.PathLike[str],
        *,
        root: str | os.PathLike[str] | None = None,
        transform: Transform | None = None,
        label_key: str = "label",
        path_key: str = "path",
        verify: bool = True,
    ) -> None:
        self.manifest = Path(manifest)
        if not self.manifest.is_file():
            raise ValueError(f"manifest {str(self.manifest)!r} does not exist or is not a file.")
        base = Path(root) if root is not None else self.manifest.parent
        suffix = self.manifest.suffix.lower()
        if suffix in (".jsonl", ".ndjson"):
            records = _read_jsonl(self.manifest)
        elif suffix == ".csv":
            records = _read_csv(self.manifest)
        else:
            raise ValueError(f"manifest {str(self.manifest)!r}: unknown suffix {suffix!r}; "
                             "use .jsonl (JSON lines) or .csv (with a header row).")
        samples = []
        for line, record in records:
            path, label = _parse_record(record, path_key, label_key, self.manifest, line)
            samples.append((os.fspath(base / path), label))
        super().__init__(self.manifest, samples, transform, verify)

    @property
    def num_classes(self) -> int:
        """``max(label) + 1`` over the readable samples."""
        return max(self.targets) + 1


def _read_jsonl(manifest: Path) -> list[tuple[int, dict]]:
    records = []
    with open(manifest, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"manifest {str(manifest)!r} line {line_no}: not valid JSON ({exc.msg}).") from exc
            if not isinstance(record, dict):
                raise ValueError(f"manifest {str(manifest)!r} line {line_no}: expected a JSON object, "
                                 f"got {type(record).__name__}.")
            records.append((line_no, record))
    return records


def _read_csv(manifest: Path) -> list[tuple[int, dict]]:
    records = []
    with open(manifest, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        try:
            for row in reader:
                line_no = reader.line_num
                if None in row:  # more fields than the header
                    raise ValueError(f"manifest {str(manifest)!r} line {line_no}: {len(reader.fieldnames) + len(row[None])} "
                                     f"fields but the header has {len(reader.fieldnames)}.")
                if any(v is None for v in row.values()):  # fewer fields than the header
                    n = sum(v is not None for v in row.values())
                    raise ValueError(f"manifest {str(manifest)!r} line {line_no}: {n} fields but the header "
                                     f"has {len(reader.fieldnames)}.")
                if not any(v.strip() for v in row.values()):
                    continue
                records.append((line_no, row))
        except csv.Error as exc:
            raise ValueError(f"manifest {str(manifest)!r} line {reader.line_num}: malformed CSV ({exc}).") from exc
    return records


def _parse_record(record: dict, path_key: str, label_key: str, manifest: Path, line: int) -> tuple[str, int]:
    where = f"manifest {str(manifest)!r} line {line}"
    for key in (path_key, label_key):
        if key not in record:
            raise ValueError(f"{where}: missing key {key!r} (keys: {sorted(map(str, record))}).")
    path, label = record[path_key], record[label_key]
    if not isinstance(path, str) or not path.strip():
        raise ValueError(f"{where}: {path_key!r} must be a non-empty string, got {path!r}.")
    if isinstance(label, str):
        try:
            label = int(label.strip())
        except ValueError:
            raise ValueError(f"{where}: {label_key!r} must be an integer, got {label!r}.") from None
    if isinstance(label, bool) or not isinstance(label, int) or label < 0:
        raise ValueError(f"{where}: {label_key!r} must be a non-negative integer, got {label!r}.")
    return path, label
