"""Figures and the HTML report: drawing primitives (:mod:`~inr_fast.report.plots`), the run's figures
(:mod:`~inr_fast.report.figures`) and report.html (:mod:`~inr_fast.report.html`)."""
