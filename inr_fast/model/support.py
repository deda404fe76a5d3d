"""Decoding a jet through its stored support: the reconstruction is exactly zero where the original is,
at least the zero-suppression level where it is not, and uniform over each 5 x 5 HCAL tower.

A network fitted to a sparse image spreads a faint +- floor over the ~98 % empty pixels; no threshold
removes it without biasing the jet mass. Instead the support itself (which (pixel, channel) entries are
non-zero) is stored losslessly with the network: about 150-250 bytes per jet (:func:`encode_support`),
HCAL at tower granularity. Decoding (:func:`decode`) then applies, in GeV:

1. HCAL towers: every HCAL pixel becomes the mean of its aligned 5 x 5 tower (the detector has no
   finer granularity; the tower's total is kept);
2. the zero-suppression floor: a non-zero entry is at least its channel's level ``zs`` (a detector
   records nothing below it), so the count of pixels above the level is exact;
3. the support: entries that are zero in the original are zero.

All three are elementwise or linear within a channel, so channel totals can be re-solved through them
(:func:`inr_fast.train.checks.match_channel_sums`). At another resolution the support is upsampled by
nearest neighbour (each fine pixel takes its native pixel's status) and the towers stay towers.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
import torch

from inr_fast.data.stats import DataStats
from inr_fast.errors import DataError
from inr_fast.layout import HCAL_TOWER, IMAGE_SIZE, N_CHANNELS

ECAL, HCAL, TRACKS = 0, 1, 2
N_TOWERS = IMAGE_SIZE // HCAL_TOWER


@dataclass(frozen=True)
class Decoding:
    """How a run's jets are decoded through their supports (:func:`decode`): ``zs`` the per-channel
    zero-suppression floor in GeV (None: no floor) and ``towers`` whether HCAL is decoded per tower."""

    zs: tuple[float, float, float] | None = None
    towers: bool = False

    @classmethod
    def from_stats(cls, stats: DataStats) -> Decoding:
        """The floor is the data's own smallest positive value per channel (what its zero suppression
        kept), unless the data has negative pixels (then no floor: it would move them); towers where
        every HCAL tower of the data is uniform."""
        zs = None
        if not stats.negative:
            zs = tuple(v if math.isfinite(v) else 0.0 for v in stats.min_positive)
        return cls(zs, stats.towers)

    def to_dict(self) -> dict:
        return {"zs": None if self.zs is None else list(self.zs), "towers": self.towers}

    @classmethod
    def from_dict(cls, d: dict) -> Decoding:
        zs = d.get("zs")
        return cls(None if zs is None else tuple(float(v) for v in zs), bool(d.get("towers", False)))

    def tensor_zs(self, device="cpu") -> torch.Tensor | None:
        return None if self.zs is None else torch.tensor(self.zs, dtype=torch.float64, device=device)


def support_of(images: np.ndarray) -> np.ndarray:
    """The support of images (k, 125, 125, 3): a bool array, True where the original is non-zero."""
    return np.asarray(images) != 0


def _varint(values: np.ndarray) -> bytes:
    out = bytearray()
    for v in values.tolist():
        while v >= 128:
            out.append((v & 127) | 128)
            v >>= 7
        out.append(v)
    return bytes(out)


def _unvarint(data: bytes, start: int, n: int) -> tuple[np.ndarray, int]:
    out = np.empty(n, dtype=np.int64)
    pos = start
    for i in range(n):
        v, shift = 0, 0
        while True:
            b = data[pos]
            pos += 1
            v |= (b & 127) << shift
            shift += 7
            if b < 128:
                break
        out[i] = v
    return out, pos


def encode_support(mask: np.ndarray, towers: bool) -> bytes:
    """One jet's support (125, 125, 3) bool as bytes: per channel the count and the gaps between the
    flat indices of its non-zero entries (varints), zlib-compressed; HCAL per tower when ``towers``
    (then a tower is in the support when any of its pixels is)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (IMAGE_SIZE, IMAGE_SIZE, N_CHANNELS):
        raise DataError(f"support mask must be ({IMAGE_SIZE}, {IMAGE_SIZE}, {N_CHANNELS}), got {mask.shape}")
    parts = []
    for c in range(N_CHANNELS):
        m = mask[..., c]
        if c == HCAL and towers:
            m = m.reshape(N_TOWERS, HCAL_TOWER, N_TOWERS, HCAL_TOWER).any(axis=(1, 3))
        idx = np.flatnonzero(m)
        parts.append(_varint(np.array([len(idx)])) + _varint(np.diff(np.concatenate([[-1], idx])) - 1))
    return zlib.compress(b"".join(parts), 9)


def decode_support(blob: bytes, towers: bool) -> np.ndarray:
    """The (125, 125, 3) bool support of :func:`encode_support`'s bytes."""
    try:
        data = zlib.decompress(bytes(blob))
    except zlib.error as err:
        raise DataError(f"a stored support mask is damaged ({err})") from None
    mask = np.zeros((IMAGE_SIZE, IMAGE_SIZE, N_CHANNELS), dtype=bool)
    pos = 0
    for c in range(N_CHANNELS):
        (n,), pos = _unvarint(data, pos, 1)
        gaps, pos = _unvarint(data, pos, int(n))
        idx = np.cumsum(gaps + 1) - 1
        if c == HCAL and towers:
            t = np.zeros(N_TOWERS * N_TOWERS, dtype=bool)
            t[idx] = True
            mask[..., c] = np.repeat(np.repeat(t.reshape(N_TOWERS, N_TOWERS), HCAL_TOWER, 0), HCAL_TOWER, 1)
        else:
            mask[..., c].flat[idx] = True
    return mask


def pack_supports(masks: np.ndarray, towers: bool) -> tuple[np.ndarray, np.ndarray]:
    """Supports of k jets (k, 125, 125, 3) as (blob (bytes,) uint8, offsets (k + 1,) int64)."""
    blobs = [encode_support(m, towers) for m in masks]
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    return np.frombuffer(b"".join(blobs), dtype=np.uint8).copy(), offsets


def unpack_supports(blob: np.ndarray, offsets: np.ndarray, towers: bool) -> np.ndarray:
    """The (k, 125, 125, 3) bool supports of :func:`pack_supports`."""
    raw = np.asarray(blob, dtype=np.uint8).tobytes()
    off = np.asarray(offsets, dtype=np.int64)
    return np.stack([decode_support(raw[off[i] : off[i + 1]], towers) for i in range(len(off) - 1)])


def tower_means(values: torch.Tensor, size: int = IMAGE_SIZE) -> torch.Tensor:
    """HCAL of values (B, size * size, 3) replaced by its tower means (towers of size / 25 pixels
    a side; any size a multiple of 25), other channels unchanged."""
    b = values.shape[0]
    t = size // N_TOWERS
    h = values[..., HCAL].reshape(b, N_TOWERS, t, N_TOWERS, t)
    h = h.mean(dim=(2, 4), keepdim=True).expand(-1, -1, t, -1, t).reshape(b, size * size)
    return torch.stack([values[..., ECAL], h, values[..., TRACKS]], dim=-1)


def decode(
    values: torch.Tensor, mask: torch.Tensor, zs: torch.Tensor | None = None, towers: bool = False
) -> torch.Tensor:
    """The decoded reconstruction (B, N, 3) in GeV from the network's values (B, N, 3) in GeV on the
    native grid (N = 125^2, row-major), the supports ``mask`` (B, N, 3) bool, the zero-suppression
    levels ``zs`` (3,) (None: no floor) and whether HCAL is decoded on towers (see the module
    docstring). Differentiable in ``values``."""
    if towers:
        values = tower_means(values)
    if zs is not None:
        values = torch.maximum(values, zs.to(values.dtype).to(values.device))
    return torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device))


def upsample(mask: np.ndarray, resolution: int) -> np.ndarray:
    """A native support (125, 125, 3) on a resolution x resolution grid over the same window, by
    nearest neighbour: each fine pixel takes the status of the native pixel its centre lies in."""
    centres = (
        ((np.arange(resolution) + 0.5) * IMAGE_SIZE / resolution).astype(np.int64).clip(0, IMAGE_SIZE - 1)
    )
    return mask[centres][:, centres]


def decode_sparse(
    values: torch.Tensor,
    idx: torch.Tensor,
    valid: torch.Tensor,
    support: torch.Tensor,
    zs: torch.Tensor | None = None,
    towers: bool = False,
) -> torch.Tensor:
    """:func:`decode` at some pixels only: values (k, M, 3) in GeV at the native pixels ``idx`` (k, M)
    (flat indices; ``valid`` (k, M) marks the real ones, the rest is padding), ``support`` (k, N, 3).
    HCAL tower means are taken over the valid pixels of each tower, which are all its pixels when the
    pixels given are a jet's whole support (towers mode stores HCAL supports as whole towers)."""
    if towers:
        k = values.shape[0]
        tower = (idx // IMAGE_SIZE) // HCAL_TOWER * N_TOWERS + (idx % IMAGE_SIZE) // HCAL_TOWER  # (k, M)
        w = valid.to(values.dtype)
        h = values[..., HCAL]
        sums = torch.zeros((k, N_TOWERS * N_TOWERS), dtype=values.dtype, device=values.device)
        counts = torch.zeros_like(sums)
        sums = sums.scatter_add(1, tower, h * w)
        counts = counts.scatter_add(1, tower, w)
        mean = (sums / counts.clamp(min=1)).gather(1, tower)
        values = torch.stack([values[..., ECAL], mean, values[..., TRACKS]], dim=-1)
    if zs is not None:
        values = torch.maximum(values, zs.to(values.dtype).to(values.device))
    mask = support.gather(1, idx.unsqueeze(-1).expand(-1, -1, N_CHANNELS)) & valid.unsqueeze(-1)
    return torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device))
