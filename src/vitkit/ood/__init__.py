"""Out-of-distribution and open-set detection: metrics, baseline detectors, MoLAR.

    from vitkit.ood import make_detector, load_detector, auroc, fpr_at_tpr
"""

from . import molar  # noqa: F401 - defines (and so registers) the MoLAR detector
from .detectors import DETECTOR_NAMES, DETECTORS, Detector, load_detector, make_detector, register_detector
from .metrics import aupr_in, aupr_out, auroc, fpr_at_tpr, oscr

__all__ = ["DETECTORS", "DETECTOR_NAMES", "Detector", "register_detector", "aupr_in", "aupr_out", "auroc", "fpr_at_tpr", "load_detector",
           "make_detector", "oscr"]
