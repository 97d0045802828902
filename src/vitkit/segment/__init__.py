"""Weakly supervised semantic segmentation: CAM baseline, MoRe, VPL (see :mod:`vitkit.segment.wsss`); the
promptable-segmentation evaluation (see :mod:`vitkit.segment.promptable`)."""

from vitkit.segment.cam import PatchClassifier, maps_to_label, normalize_maps, pseudo_label
from vitkit.segment.mask_metrics import iou_dice, saliency_measures, score_mask
from vitkit.segment.metrics import IGNORE, IoUMeter, confusion_matrix, mean_iou
from vitkit.segment.more import GraphCategoryRepresentation, MoRe, MoReConfig
from vitkit.segment.promptable import PromptableConfig, run_promptable
from vitkit.segment.promptable_model import PromptSegConfig, PromptSegmenter
from vitkit.segment.promptable_train import PromptTrainConfig, train_prompt_segmenter
from vitkit.segment.segmenters import BuiltinSegmenter, SamSegmenter, Segmenter, load_segmenter
from vitkit.segment.vpl import VPL, VPLConfig
from vitkit.segment.wsss import METHODS, WSSSConfig, run_wsss

__all__ = ["IGNORE", "METHODS", "GraphCategoryRepresentation", "IoUMeter", "MoRe", "MoReConfig", "PatchClassifier",
           "VPL", "VPLConfig", "WSSSConfig", "confusion_matrix", "maps_to_label", "mean_iou", "normalize_maps",
           "pseudo_label", "run_wsss",
           "BuiltinSegmenter", "PromptSegConfig", "PromptSegmenter", "PromptTrainConfig", "PromptableConfig",
           "SamSegmenter", "Segmenter", "iou_dice", "load_segmenter", "run_promptable", "saliency_measures",
           "score_mask", "train_prompt_segmenter"]
