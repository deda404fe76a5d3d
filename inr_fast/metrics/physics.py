"""Physics quantities from jet images, and how well a reconstruction keeps them (pure functions).

Conventions (all inputs on the ORIGINAL, un-normalised image in GeV, channels last, channel order
ECAL, HCAL, Tracks as in :mod:`inr_fast.layout`; image axis 0 = eta rows, axis 1 = phi columns):

- Every pixel is a massless four-vector whose transverse momentum is the pixel value, i.e. pixel values
  are read as transverse energies E_T = p_T (the images carry no other information).
- Its direction is the pixel centre, measured from the image centre on the physical grid of pitch
  :data:`inr_fast.layout.PITCH` (0.0174 in eta and phi): pixel ``i`` of ``n`` sits at
  ``(i - (n - 1) / 2) * pitch`` (:func:`inr_fast.data.grid.physical_centres`), so the centre pixel of a
  125 x 125 image is at (0, 0). Jet pT and mass
  are invariant under the shifts in eta (longitudinal boost) and phi (rotation) that this relative
  frame drops, so they equal what absolute coordinates would give.
- Four-vector of a pixel: ``px = pT cos(phi)``, ``py = pT sin(phi)``, ``pz = pT sinh(eta)``,
  ``E = pT cosh(eta)``. Jet: the sum over the selected channels and all pixels;
  ``pT = sqrt(px^2 + py^2)``, ``mass = sqrt(max(E^2 - px^2 - py^2 - pz^2, 0))``.
- Channels: default :data:`CALO_CHANNELS` = (ECAL, HCAL). The Tracks channel measures charged particles
  whose energy the calorimeters also record, so adding it double-counts; pass ``channels=(0, 1, 2)``
  to include it anyway.
- Relative errors are signed: ``(value(x_hat) - value(x)) / value(x)``; nan where value(x) = 0 and
  value(x_hat) = 0, +-inf where only value(x) = 0.

Functions take numpy arrays or torch tensors of shape (..., H, W, C) and return the same kind (numpy
in -> numpy float64 out; torch in -> torch float64 out on the input's device). Sums are done in float64.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from inr_fast.arrays import check_image, check_pair, like, relative, to_torch
from inr_fast.data.grid import physical_centres
from inr_fast.errors import DataError
from inr_fast.layout import CHANNELS, PITCH

#: channels summed into the jet four-vector by default: ECAL and HCAL (see module docstring).
CALO_CHANNELS: tuple[int, ...] = (0, 1)
ALL_CHANNELS: tuple[int, ...] = (0, 1, 2)
#: default threshold (GeV) for counting a pixel as non-zero in a reconstruction: 1 MeV, far below any
#: calorimeter zero-suppression threshold, so it only asks that the fit did not wipe the pixel out.
NONZERO_THRESHOLD = 1e-3


def _four_momentum(x: torch.Tensor, channels: Sequence[int], pitch: float) -> torch.Tensor:
    check_image(x)
    n_ch = x.shape[-1]
    channels = tuple(int(c) for c in channels)
    if not channels or any(c < 0 or c >= n_ch for c in channels):
        raise DataError(f"channels {channels} do not index an image with {n_ch} channels")
    pt = x[..., list(channels)].sum(dim=-1)  # (..., H, W)
    eta = torch.from_numpy(physical_centres(x.shape[-3], pitch)).to(x.device)
    phi = torch.from_numpy(physical_centres(x.shape[-2], pitch)).to(x.device)
    ch_eta, sh_eta = torch.cosh(eta)[:, None], torch.sinh(eta)[:, None]  # (H, 1)
    c_phi, s_phi = torch.cos(phi)[None, :], torch.sin(phi)[None, :]  # (1, W)
    e = (pt * ch_eta).sum(dim=(-2, -1))
    px = (pt * c_phi).sum(dim=(-2, -1))
    py = (pt * s_phi).sum(dim=(-2, -1))
    pz = (pt * sh_eta).sum(dim=(-2, -1))
    return torch.stack([e, px, py, pz], dim=-1)


def jet_four_momentum(x, channels: Sequence[int] = CALO_CHANNELS, pitch: float = PITCH):
    """Jet four-momentum (E, px, py, pz) in GeV from an image: (..., H, W, C) -> (..., 4)."""
    return like(_four_momentum(to_torch(x), channels, pitch), x)


def _pt_mass(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    e, px, py, pz = p.unbind(-1)
    pt = torch.sqrt(px * px + py * py)
    m2 = e * e - (px * px + py * py + pz * pz)
    return pt, torch.sqrt(torch.clamp(m2, min=0.0))


def jet_pt(x, channels: Sequence[int] = CALO_CHANNELS, pitch: float = PITCH):
    """Image-based jet transverse momentum |sum of pixel pT vectors| (GeV): (..., H, W, C) -> (...)."""
    return like(_pt_mass(_four_momentum(to_torch(x), channels, pitch))[0], x)


def jet_mass(x, channels: Sequence[int] = CALO_CHANNELS, pitch: float = PITCH):
    """Image-based jet invariant mass sqrt(max(E^2 - |p|^2, 0)) (GeV): (..., H, W, C) -> (...)."""
    return like(_pt_mass(_four_momentum(to_torch(x), channels, pitch))[1], x)


def channel_sums(x):
    """Total deposit per channel (GeV): (..., H, W, C) -> (..., C), summed in float64."""
    t = to_torch(x)
    check_image(t)
    return like(t.sum(dim=(-3, -2)), x)


def channel_sum_rel_err(x_hat, x):
    """Signed relative error of each channel's total, (sum(x_hat_c) - sum(x_c)) / sum(x_c):
    (..., H, W, C) twice -> (..., C)."""
    th, t = to_torch(x_hat), to_torch(x)
    check_pair(th, t)
    return like(relative(th.sum(dim=(-3, -2)), t.sum(dim=(-3, -2))), x_hat, x)


def jet_pt_rel_err(x_hat, x, channels: Sequence[int] = CALO_CHANNELS, pitch: float = PITCH):
    """Signed relative error of the image-based jet pT: (..., H, W, C) twice -> (...)."""
    th, t = to_torch(x_hat), to_torch(x)
    check_pair(th, t)
    pt_hat = _pt_mass(_four_momentum(th, channels, pitch))[0]
    pt = _pt_mass(_four_momentum(t, channels, pitch))[0]
    return like(relative(pt_hat, pt), x_hat, x)


def jet_mass_rel_err(x_hat, x, channels: Sequence[int] = CALO_CHANNELS, pitch: float = PITCH):
    """Signed relative error of the image-based jet mass: (..., H, W, C) twice -> (...)."""
    th, t = to_torch(x_hat), to_torch(x)
    check_pair(th, t)
    m_hat = _pt_mass(_four_momentum(th, channels, pitch))[1]
    m = _pt_mass(_four_momentum(t, channels, pitch))[1]
    return like(relative(m_hat, m), x_hat, x)


def nonzero_counts(x_hat, x, threshold: float = NONZERO_THRESHOLD):
    """Sparsity bookkeeping over all (pixel, channel) entries of each image: (..., H, W, C) twice ->
    three (...) int64 arrays ``(n_nonzero, n_kept, n_spurious)``:

    - ``n_nonzero``: entries with ``x != 0`` (the original's non-zero pixels, counted per channel);
    - ``n_kept``: of those, entries with ``x_hat > threshold`` (GeV): the reconstruction still has a
      positive deposit there;
    - ``n_spurious``: entries with ``x == 0`` but ``x_hat > threshold``.
    """
    th, t = to_torch(x_hat), to_torch(x)
    check_pair(th, t)
    nz = t != 0
    on = th > threshold
    dims = (-3, -2, -1)
    counts = (nz.sum(dim=dims), (nz & on).sum(dim=dims), (~nz & on).sum(dim=dims))
    return tuple(like(c, x_hat, x) for c in counts)


def nonzero_kept(x_hat, x, threshold: float = NONZERO_THRESHOLD):
    """Fraction of the original's non-zero (pixel, channel) entries that the reconstruction keeps above
    ``threshold`` GeV, ``n_kept / n_nonzero`` (see :func:`nonzero_counts`); nan for an all-zero original.
    (..., H, W, C) twice -> (...)."""
    th, t = to_torch(x_hat), to_torch(x)
    n_nonzero, n_kept, _ = nonzero_counts(th, t, threshold)
    return like(n_kept.to(torch.float64) / n_nonzero.to(torch.float64), x_hat, x)


def off_support(x_hat, x, channels: Sequence[int] = CALO_CHANNELS):
    """The reconstruction's deposits where the original is empty, as fractions of the original's total
    over ``channels`` (default ECAL + HCAL): (..., H, W, C) twice -> two (...) arrays
    ``(signed, absolute)`` = (sum, sum of |.|) of x_hat over entries with x == 0, divided by sum(x).
    A fit that leaves a faint floor over the empty pixels can meet the channel totals while moving
    energy off the jet; ``absolute`` is 0 only for a reconstruction that is exactly zero there."""
    th, t = to_torch(x_hat), to_torch(x)
    check_pair(th, t)
    ch = list(channels)
    xs, hs = t[..., ch].double(), th[..., ch].double()
    empty = xs == 0
    total = xs.sum(dim=(-3, -2, -1))
    signed = torch.where(empty, hs, torch.zeros_like(hs)).sum(dim=(-3, -2, -1)) / total
    absolute = torch.where(empty, hs.abs(), torch.zeros_like(hs)).sum(dim=(-3, -2, -1)) / total
    return like(signed, x_hat, x), like(absolute, x_hat, x)


def physics_metrics(
    x_hat,
    x,
    channels: Sequence[int] = CALO_CHANNELS,
    pitch: float = PITCH,
    threshold: float = NONZERO_THRESHOLD,
) -> dict[str, np.ndarray]:
    """All physics quantities for a batch, as numpy float64 arrays of shape (B,) (input (B, H, W, 3)):

    ``sum_rel_err_{ecal,hcal,tracks}``, ``jet_pt``, ``jet_pt_hat``, ``jet_pt_rel_err``, ``jet_mass``,
    ``jet_mass_hat``, ``jet_mass_rel_err``, ``n_nonzero``, ``n_kept``, ``n_spurious``, ``nonzero_kept``,
    ``off_support``, ``off_support_abs`` (:func:`off_support` over ``channels``).
    """
    th, t = to_torch(x_hat), to_torch(x)
    check_pair(th, t)
    out: dict[str, torch.Tensor] = {}
    sums = relative(th.sum(dim=(-3, -2)), t.sum(dim=(-3, -2)))
    names = CHANNELS if t.shape[-1] == len(CHANNELS) else tuple(f"ch{c}" for c in range(t.shape[-1]))
    for c, name in enumerate(names):
        out[f"sum_rel_err_{name.lower()}"] = sums[..., c]
    pt, m = _pt_mass(_four_momentum(t, channels, pitch))
    pt_hat, m_hat = _pt_mass(_four_momentum(th, channels, pitch))
    out.update(jet_pt=pt, jet_pt_hat=pt_hat, jet_pt_rel_err=relative(pt_hat, pt))
    out.update(jet_mass=m, jet_mass_hat=m_hat, jet_mass_rel_err=relative(m_hat, m))
    n_nonzero, n_kept, n_spurious = nonzero_counts(th, t, threshold)
    out.update(n_nonzero=n_nonzero, n_kept=n_kept, n_spurious=n_spurious)
    out["nonzero_kept"] = n_kept.to(torch.float64) / n_nonzero.to(torch.float64)
    out["off_support"], out["off_support_abs"] = off_support(th, t, channels)
    return {k: v.detach().cpu().numpy() for k, v in out.items()}
