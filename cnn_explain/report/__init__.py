"""The HTML report: one self-contained page with every figure, and its manifest.

``write_report(explainer, images, data=None, out="report", **settings)`` (also
``explain(model).report(...)``) writes ``out/index.html``, the figures beside it
and ``out/manifest.json``. See :func:`cnn_explain.report.core.write_report`.

Modules: ``core`` (the job, figures on disk, atomic move), ``settings``
(:class:`ReportSettings`), ``sections`` / ``sections_attr`` (one builder per
section), ``html`` (the page, escaping).
"""

from .core import SCHEMA_VERSION, FigureRecord, ReportResult, Skip, check_out_folder, write_report
from .settings import ReportSettings

__all__ = ["write_report", "check_out_folder", "ReportResult", "ReportSettings", "FigureRecord", "Skip",
           "SCHEMA_VERSION", "SECTIONS"]


def __getattr__(name: str):
    if name == "SECTIONS":
        from .sections import SECTIONS

        return SECTIONS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
