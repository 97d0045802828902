"""The method packages' sections of the ``vitkit demo`` report: one (name, builder) entry each, in page order.

A builder takes a :class:`vitkit.demo.DemoContext` (the trained demo model, its pages and the FRB
splits), computes a metric dict with a function of its method's package and returns the
:class:`vitkit.report.Section` that renders it; it should add at most ~30 s on 2 CPU cores so the whole
demo stays within its 10-minute budget. Import inside the builder's own module, not here, whatever is heavy.
"""

from __future__ import annotations

from collections.abc import Callable

from vitkit.explain import report as _explain_report
from vitkit.ood import report as _ood_report
from vitkit.quant import report as _quant_report
from vitkit.reduce import report as _reduce_report

SECTIONS: list[tuple[str, Callable]] = [
    ("token reduction", _reduce_report.demo_section),
    ("quantization", _quant_report.demo_section),
    ("open-world recognition", _ood_report.demo_section),
    ("explanations", _explain_report.demo_section),
]
