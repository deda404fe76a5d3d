"""The metrics layer, on the original (GeV) images: image metrics (PSNR, rel_l2, SSIM; LPIPS with
offline weights), physics observables, and the quality levels Q1/Q2 used for early stopping and
benchmarks (docs/design.md, "Metric conventions")."""

from inr_fast.metrics.image import psnr, psnr_gain, psnr_zero, rel_l2, rel_l2_per_channel, ssim
from inr_fast.metrics.levels import compute_all, levels_met, quality_levels
from inr_fast.metrics.lpips import lpips

__all__ = [
    "compute_all",
    "levels_met",
    "lpips",
    "psnr",
    "psnr_gain",
    "psnr_zero",
    "quality_levels",
    "rel_l2",
    "rel_l2_per_channel",
    "ssim",
]
