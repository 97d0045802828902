"""Report sections that later issues add to ``vitkit demo``: one (name, builder) entry each.

A builder takes a :class:`vitkit.demo.DemoContext` (the trained demo model, its pages and the FRB
splits) and returns a :class:`vitkit.report.Section`; it should add at most ~30 s on 2 CPU cores so
the whole demo stays within its 10-minute budget. Import inside the builder's own module, not here,
whatever is heavy.
"""

from __future__ import annotations

from collections.abc import Callable

from vitkit.explain import report as _explain_report
from vitkit.ood import report as _ood_report  # issue 6 (heavy parts imported inside the builder)
from vitkit.quant import report as _quant_report  # issue 5
from vitkit.reduce import report as _reduce_report  # issue 4

SECTIONS: list[tuple[str, Callable]] = [
    ("token reduction", _reduce_report.demo_section),  # issue 4
    ("quantization", _quant_report.demo_section),  # issue 5
    ("open-world recognition", _ood_report.demo_section),  # issue 6
    ("explanations", _explain_report.demo_section),
]
