"""Fitted jets as one object: parameters, reconstructions, histories and per-jet status
(:class:`FitResult`). The run directory's on-disk form of it is :mod:`inr_fast.store`'s."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from inr_fast.data.normalise import PerJetMaxScaler
from inr_fast.errors import DataError, InrFastError
from inr_fast.layout import IMAGE_SIZE, N_CHANNELS
from inr_fast.model.render import render_jet
from inr_fast.model.support import Decoding
from inr_fast.train.config import FitConfig
from inr_fast.util import format_indices


@dataclass
class FitResult:
    """Fitted jets, k of them, all arrays on the CPU.

    indices (k,) int64: jet ids (file indices for runs); weights[l] (k, fan_out, fan_in), biases[l]
    (k, fan_out) float32; reconstructions (k, 125, 125, 3) float32 on the original scale (the float32
    reference render of the final parameters); loss_history / psnr_history / rel_l2_history
    (k, max_steps) float32, NaN where not recorded (loss: every step, normalised MSE before that step's
    update; metrics: every check_every steps); n_steps (k,) optimiser steps taken; psnr, rel_l2 (k,) of
    the reconstructions (float64); reached_target, retried (in float32 after a non-finite loss),
    failed (non-finite even then; parameters stored as zeros) (k,) bool; norm_scales (k,) float64 for
    per-jet normalisations, else None; normaliser: the run-wide normaliser or None; empty (k,) bool:
    jets with no non-zero pixel, which are not fitted (zero parameters, 0 steps, psnr and rel_l2 NaN)
    and render as zeros. ``reconstructions`` is None for results loaded from a run directory that
    does not keep diagnostics (render them from the parameters). support (k, 125, 125, 3) bool and
    decoding: for fits decoded through their supports (``FitConfig.support``), else None.
    """

    config: FitConfig
    indices: np.ndarray
    weights: list[torch.Tensor]
    biases: list[torch.Tensor]
    reconstructions: np.ndarray | None
    loss_history: np.ndarray
    psnr_history: np.ndarray
    rel_l2_history: np.ndarray
    n_steps: np.ndarray
    psnr: np.ndarray
    rel_l2: np.ndarray
    reached_target: np.ndarray
    retried: np.ndarray
    failed: np.ndarray
    empty: np.ndarray | None = None
    norm_scales: np.ndarray | None = None
    normaliser: object = None
    seed: int = 0
    seconds: float = 0.0
    support: np.ndarray | None = None
    decoding: Decoding | None = None

    def __post_init__(self) -> None:
        if self.empty is None:
            self.empty = np.zeros(len(self.indices), dtype=bool)

    def __len__(self) -> int:
        return len(self.indices)

    def position(self, index: int) -> int:
        """Position of jet id ``index`` in this result."""
        hits = np.flatnonzero(self.indices == int(index))
        if hits.size == 0:
            raise DataError(f"jet index {index} is not in this fit (it holds {format_indices(self.indices)})")
        return int(hits[0])

    def jet_normaliser(self, position: int):
        """The normaliser of the jet at ``position`` (a B = 1 normaliser for per-jet kinds)."""
        if self.norm_scales is not None:
            return PerJetMaxScaler(self.norm_scales[position : position + 1], mode="jet")
        return self.normaliser

    def jet_params(self, position: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(weights, biases) of one jet as B = 1 stacks."""
        return (
            [w[position : position + 1] for w in self.weights],
            [b[position : position + 1] for b in self.biases],
        )

    def render(self, index: int, resolution: int = IMAGE_SIZE, device="cpu") -> np.ndarray:
        """Jet id ``index`` rendered on a resolution^2 grid, (P, P, 3) float32, energy conserving
        (see :func:`inr_fast.model.render.render_jet`)."""
        pos = self.position(index)
        if self.failed[pos]:
            raise InrFastError(
                f"jet {index} failed to fit (non-finite loss even in float32); nothing to render"
            )
        if self.empty[pos]:
            return np.zeros((resolution, resolution, N_CHANNELS), dtype=np.float32)
        w, b = self.jet_params(pos)
        support = None if self.support is None else self.support[pos]
        return render_jet(
            self.config.model, w, b, self.jet_normaliser(pos), resolution, device,
            support=support, decoding=self.decoding,
        )  # fmt: skip

    @classmethod
    def concat(cls, parts: Sequence[FitResult]) -> FitResult:
        """Join results of the same config (in the order given)."""
        if not parts:
            raise ValueError("FitResult.concat needs at least one part")
        first = parts[0]
        cat = lambda name: np.concatenate([getattr(p, name) for p in parts])  # noqa: E731
        n_layers = len(first.weights)
        return cls(
            config=first.config,
            indices=cat("indices"),
            weights=[torch.cat([p.weights[i] for p in parts]) for i in range(n_layers)],
            biases=[torch.cat([p.biases[i] for p in parts]) for i in range(n_layers)],
            reconstructions=None if first.reconstructions is None else cat("reconstructions"),
            loss_history=cat("loss_history"),
            psnr_history=cat("psnr_history"),
            rel_l2_history=cat("rel_l2_history"),
            n_steps=cat("n_steps"),
            psnr=cat("psnr"),
            rel_l2=cat("rel_l2"),
            reached_target=cat("reached_target"),
            retried=cat("retried"),
            failed=cat("failed"),
            empty=cat("empty"),
            support=None if first.support is None else cat("support"),
            decoding=first.decoding,
            norm_scales=cat("norm_scales") if first.norm_scales is not None else None,
            normaliser=first.normaliser,
            seed=first.seed,
            seconds=sum(p.seconds for p in parts),
        )
