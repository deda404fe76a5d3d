"""The trainer: configuration and presets (:mod:`~inr_fast.train.config`), the optimiser and loss
scaling (:mod:`~inr_fast.train.optim`), pixel sampling (:mod:`~inr_fast.train.sampling`), device and
backend choice (:mod:`~inr_fast.train.backend`), what a check step judges
(:mod:`~inr_fast.train.checks`), the loop (:mod:`~inr_fast.train.loop`), results
(:mod:`~inr_fast.train.result`) and the API (:mod:`~inr_fast.train.api`)."""

from inr_fast.train.api import fit
from inr_fast.train.config import COMPACT, FAST, PRESETS, SEED, FitConfig, get_preset
from inr_fast.train.result import FitResult

__all__ = ["COMPACT", "FAST", "PRESETS", "SEED", "FitConfig", "FitResult", "fit", "get_preset"]
