"""Weakly supervised semantic segmentation: CAM baseline, MoRe, VPL (see :mod:`vitkit.segment.wsss`)."""

from vitkit.segment.cam import PatchClassifier, maps_to_label, normalize_maps, pseudo_label
from vitkit.segment.metrics import IGNORE, IoUMeter, confusion_matrix, mean_iou
from vitkit.segment.more import GraphCategoryRepresentation, MoRe, MoReConfig
from vitkit.segment.vpl import VPL, VPLConfig
from vitkit.segment.wsss import METHODS, WSSSConfig, run_wsss

__all__ = ["IGNORE", "METHODS", "GraphCategoryRepresentation", "IoUMeter", "MoRe", "MoReConfig", "PatchClassifier",
           "VPL", "VPLConfig", "WSSSConfig", "confusion_matrix", "maps_to_label", "mean_iou", "normalize_maps",
           "pseudo_label", "run_wsss"]
