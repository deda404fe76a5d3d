"""What each training step's loss sees: per-pixel emphasis of bright pixels, per-step pixel subsets
(non-empty pixels plus a few random empty ones, weighted to an unbiased estimate), and the per-jet
weighted MSE."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def weighted_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Per-jet training loss (B,): mean over pixels and channels of w_n (pred - target)^2 for
    (B, N, 3) inputs and pixel weights w (B, N) (None: 1), computed in float32."""
    sq = (pred.float() - target).square()
    if weight is not None:
        sq = sq * weight.unsqueeze(-1)
    return sq.mean(dim=(1, 2))


def pixel_emphasis(images: torch.Tensor, bright_weight: float) -> torch.Tensor:
    """Per-pixel loss weights (B, N) of ``FitConfig.bright_weight`` for images (B, N, 3) in GeV:
    1 + bright_weight sqrt(E_n / max_n E_n), E_n the pixel's energy summed over channels (negative
    sums count as 0; all-empty jets get weight 1 everywhere)."""
    e = images.double().sum(dim=-1).clamp_min(0)
    peak = e.amax(dim=1, keepdim=True)
    rel = torch.where(peak > 0, e / peak.clamp_min(1e-300), torch.zeros_like(e))
    return (1 + bright_weight * rel.sqrt()).float()


class PixelSampler:
    """Per-step pixel subsets of a batch of jets (``FitConfig.empty_samples`` = k).

    Jet b owns its non-empty pixels S_b (any channel > 0) and empty pixels E_b. A draw gives each
    active jet the same number M = max |S_b| + k of (pixel index, weight) slots: its |S_b| non-empty
    pixels with weight M / N, then k empty pixels drawn uniformly with replacement from E_b with
    weight M / N * |E_b| / k, then zero-weight padding. The fused kernel's weighted mean
    sum_j w_j e_j / M is then an unbiased estimate of the full-image mean sum_n e_n / N, and what a
    jet draws depends on its own generator (seeded with its jet seed) only, not on the batch.
    ``emphasis`` (B, N): per-pixel loss weights (:func:`pixel_emphasis`), multiplied into the
    non-empty pixels' weights (the estimate is then one of the weighted mean).
    """

    def __init__(
        self,
        images: torch.Tensor,
        empty_samples: int,
        seeds: Sequence[int],
        emphasis: torch.Tensor | None = None,
    ):
        device = images.device
        nonempty = (images > 0).any(dim=-1)  # (B, N)
        self.n_pix = nonempty.shape[1]
        self.k = int(empty_samples)
        self.n_nz = nonempty.sum(dim=1)  # (B,)
        # row b: S_b (ascending) then E_b (ascending)
        self.order = torch.argsort((~nonempty).to(torch.int8), dim=1, stable=True)
        self.gens = [torch.Generator(device=device).manual_seed(int(s) % (2**63)) for s in seeds]
        # per-pixel loss weights of the non-empty pixels (bright_weight), in the layout of ``order``
        self.emphasis = None if emphasis is None else emphasis.float().gather(1, self.order)

    def draw(self, jets: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel indices (k, M) int64 and weights (k, M) float32 of the jets at batch positions ``jets``."""
        device = self.order.device
        pos = torch.as_tensor(list(jets), dtype=torch.int64, device=device)
        n_nz = self.n_nz[pos].unsqueeze(1)  # (k, 1)
        m = int(n_nz.max()) + self.k
        u = torch.stack([torch.rand(self.k, generator=self.gens[j], device=device) for j in jets])
        n_empty = self.n_pix - n_nz
        j = torch.arange(m, device=device).unsqueeze(0)  # (1, M)
        is_nz, is_empty = j < n_nz, (j >= n_nz) & (j < n_nz + self.k)
        u_at = u.gather(1, (j - n_nz).clamp(0, self.k - 1))  # slot j >= |S_b| uses draw j - |S_b|
        col = torch.where(is_nz, j, (n_nz + (u_at * n_empty).long()).clamp(max=self.n_pix - 1))
        idx = self.order[pos].gather(1, col)
        scale = m / self.n_pix
        w_empty = (scale * n_empty.double() / self.k).float()
        zero = torch.zeros((), device=device)
        w_nz = torch.full_like(u_at, scale)
        if self.emphasis is not None:
            w_nz = w_nz * self.emphasis[pos].gather(1, j.clamp(max=self.n_pix - 1).expand(len(pos), -1))
        weight = torch.where(is_nz, w_nz, torch.where(is_empty, w_empty, zero))
        weight = torch.where(is_empty & (n_empty == 0), zero, weight)
        return idx, weight


class SupportSampler:
    """The pixels a jet trains on when it is decoded through its support (``FitConfig.support``): its
    support pixels S_b (any channel non-zero), every step (no random draws). A draw gives each active
    jet M = max |S_b| slots: its pixels with weight M / |S_b| (times ``emphasis``, the bright-pixel
    weights), then zero-weight padding, so the fused kernel's weighted mean is the mean over S_b.
    Same interface as :class:`PixelSampler`."""

    def __init__(self, support: torch.Tensor, emphasis: torch.Tensor | None = None):
        on = support.any(dim=-1)  # (B, N)
        self.n_on = on.sum(dim=1)  # (B,)
        self.order = torch.argsort((~on).to(torch.int8), dim=1, stable=True)  # S_b first
        self.emphasis = None if emphasis is None else emphasis.float().gather(1, self.order)

    def draw(self, jets) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.order.device
        pos = torch.as_tensor(list(jets), dtype=torch.int64, device=device)
        n_on = self.n_on[pos].unsqueeze(1)  # (k, 1)
        m = max(int(n_on.max()), 1)
        j = torch.arange(m, device=device).unsqueeze(0)
        idx = self.order[pos][:, :m]
        weight = torch.where(j < n_on, m / n_on.clamp(min=1).float(), torch.zeros((), device=device))
        if self.emphasis is not None:
            weight = weight * self.emphasis[pos][:, :m]
        return idx, weight.float()
