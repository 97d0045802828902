"""The self-contained HTML report: one function per section, one file out."""

from vitkit.report.html import Report, Section, escape, figure, make_id, png_data_uri, table
from vitkit.report.sections import (
    ProtocolLike,
    protocol_section,
    samples_section,
    summary_section,
    training_section,
)

__all__ = [
    "ProtocolLike",
    "Report",
    "Section",
    "escape",
    "figure",
    "make_id",
    "png_data_uri",
    "protocol_section",
    "samples_section",
    "summary_section",
    "table",
    "training_section",
]
