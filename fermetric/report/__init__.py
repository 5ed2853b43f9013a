"""Run directory reader and the self-contained HTML report.

`build_report(run_dirs, out_path, title=None, extra_dirs=()) -> Path` reads only files (no model
is loaded), so a report can be rebuilt from run directories on any machine.
"""
from fermetric.report.collect import ExtraSummary, RunSummary, collect_extra, collect_run
from fermetric.report.html import build_report, render_report

__all__ = ["build_report", "render_report", "collect_run", "collect_extra", "RunSummary", "ExtraSummary"]
