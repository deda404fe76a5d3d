"""Normalisers: the values an INR is trained on, and back; per-channel moments, streamed.

Normalisers map images (..., 3) to the values an INR is trained on and back, exactly invertible and
serialisable (``to_dict`` / :func:`normaliser_from_dict`): :class:`ChannelStandardiser` (the seed's
global per-channel mean/std, fitted streaming), :class:`PerJetMaxScaler`, :class:`IntensityTransform`
(log1p / asinh / signed log1p), :class:`Compose`, :class:`Identity`. :func:`fit_normaliser` builds the
run-wide normaliser a fit configuration names; :func:`batch_normaliser` and :func:`subset_normaliser`
give the normaliser of a batch of jets and of a subset of it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from inr_fast.data.jetfile import IndexSpec, JetFile, resolve_indices
from inr_fast.data.moments import Moments, _check_channels, _to_numpy, channel_moments, merge_moments
from inr_fast.errors import ConfigError, DataError
from inr_fast.layout import N_CHANNELS
from inr_fast.util import refuse_unknown

NORMALISATIONS = ("channel_standardiser", "asinh_standardiser", "per_jet_max", "identity")


def _as_float(x):
    """A floating tensor/array (ints and lists become float64 numpy / default-dtype torch)."""
    if isinstance(x, torch.Tensor):
        return x if x.is_floating_point() else x.to(torch.get_default_dtype())
    x = np.asarray(x)
    return x if x.dtype.kind == "f" else x.astype(np.float64)


def _const(values, like):
    """``values`` as an array of the same kind, dtype and device as ``like``."""
    if isinstance(like, torch.Tensor):
        return torch.as_tensor(np.asarray(values, dtype=np.float64), dtype=like.dtype, device=like.device)
    return np.asarray(values, dtype=like.dtype)


def _ops(x):
    return torch if isinstance(x, torch.Tensor) else np


def _float3(values, name: str) -> tuple[float, float, float]:
    try:
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be {N_CHANNELS} numbers, got {values!r}") from None
    if arr.shape != (N_CHANNELS,) or not np.isfinite(arr).all():
        raise ConfigError(f"{name} must be {N_CHANNELS} finite numbers, got {values!r}")
    return tuple(float(v) for v in arr)


def _check_keys(d: dict, kind: str, required: set[str], optional: set[str] = frozenset()) -> None:
    refuse_unknown(required | set(optional) | {"kind"}, d, f"normaliser '{kind}'")
    missing = required - set(d)
    if missing:
        raise ConfigError(f"normaliser '{kind}': missing key(s) {', '.join(sorted(missing))}")


class Normaliser:
    """Base class: ``forward(images) -> values``, ``inverse(values) -> images``, both on numpy arrays
    or torch tensors of shape (..., 3) (dtype and device kept); ``to_dict()`` gives a JSON-able dict
    with a ``"kind"`` key, rebuilt by :func:`normaliser_from_dict`."""

    kind: str = ""

    def forward(self, images):
        raise NotImplementedError

    def inverse(self, values):
        raise NotImplementedError

    def __call__(self, images):
        return self.forward(images)

    def to_dict(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_dict(cls, d: dict) -> Normaliser:
        raise NotImplementedError

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.to_dict() == other.to_dict()

    def __hash__(self):
        return hash(repr(self.to_dict()))

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if k != "kind")
        return f"{type(self).__name__}({fields})"


class Identity(Normaliser):
    """No normalisation."""

    kind = "identity"

    def forward(self, images):
        return _as_float(images)

    def inverse(self, values):
        return _as_float(values)

    def to_dict(self) -> dict:
        return {"kind": self.kind}

    @classmethod
    def from_dict(cls, d: dict) -> Identity:
        _check_keys(d, cls.kind, set())
        return cls()


def standardise(x, mean, std):
    """``(x - mean) / std`` per channel; x (..., 3), mean and std (3,)."""
    x = _as_float(x)
    return (x - _const(mean, x)) / _const(std, x)


def unstandardise(v, mean, std):
    """``v * std + mean`` per channel, the inverse of :func:`standardise`."""
    v = _as_float(v)
    return v * _const(std, v) + _const(mean, v)


class ChannelStandardiser(Normaliser):
    """The seed's recipe: ``(x - mean[c]) / std[c]`` with the global per-channel mean and population
    std over all pixels of the selected jets. A channel with zero spread gets std 1 (only shifted)."""

    kind = "channel_standardiser"

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean = _float3(mean, "ChannelStandardiser mean")
        self.std = _float3(std, "ChannelStandardiser std")
        if min(self.std) <= 0:
            raise ConfigError(f"ChannelStandardiser std must be positive, got {self.std}")

    @classmethod
    def from_moments(cls, moments: Moments, source: str = "images") -> ChannelStandardiser:
        if moments.count == 0:
            raise DataError(f"{source}: cannot fit a ChannelStandardiser on an empty selection")
        std = np.sqrt(moments.m2 / moments.count)
        std = np.where(std > 0, std, 1.0)
        return cls(tuple(moments.mean), tuple(std))

    @classmethod
    def fit(
        cls, jetfile: JetFile, indices: IndexSpec = None, chunk_size: int = 256, pre: Normaliser | None = None
    ) -> ChannelStandardiser:
        """Fit streaming over the selected jets of ``jetfile`` (float64, Chan merge of per-block
        moments; one chunk in memory at a time). ``pre``: a normaliser applied to each chunk first
        (e.g. an asinh transform, to fit ``Compose([asinh, standardiser])``), in float64. ``pre`` must
        be pointwise (not a :class:`PerJetMaxScaler`)."""
        moments = Moments.empty()
        for _, images in jetfile.iter_chunks(indices, chunk_size):
            moments = merge_moments(moments, channel_moments(images, pre=pre))
        return cls.from_moments(moments, str(jetfile.path))

    @classmethod
    def from_images(cls, images) -> ChannelStandardiser:
        """Fit on images (..., 3) already in memory (numpy or torch)."""
        return cls.from_moments(channel_moments(images))

    def forward(self, images):
        return standardise(images, self.mean, self.std)

    def inverse(self, values):
        return unstandardise(values, self.mean, self.std)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict) -> ChannelStandardiser:
        _check_keys(d, cls.kind, {"mean", "std"})
        return cls(d["mean"], d["std"])


def max_scales(images, mode: str = "jet") -> np.ndarray:
    """Max-abs scales of images (B, ..., 3): ``"jet"`` -> (B,) over each jet's pixels and channels,
    ``"channel"`` -> (B, 3) per jet and channel, ``"global"`` -> () over everything. All-zero
    entries get scale 1 (they stay zero). float64."""
    x = np.abs(_to_numpy(images)).astype(np.float64, copy=False)
    _check_channels(x, "images")
    if mode == "global":
        s = np.asarray(x.max() if x.size else 0.0)
    elif x.ndim < 2:
        raise DataError(f"images: per-jet max scaling needs (B, ..., 3), got shape {x.shape}")
    elif mode == "jet":
        s = x.reshape(len(x), -1).max(axis=1) if x.size else np.zeros(len(x))
    elif mode == "channel":
        s = x.reshape(len(x), -1, N_CHANNELS).max(axis=1) if x.size else np.zeros((len(x), N_CHANNELS))
    else:
        raise ConfigError(f"PerJetMaxScaler mode must be 'jet', 'channel' or 'global', got {mode!r}")
    return np.where(s > 0, s, 1.0)


class PerJetMaxScaler(Normaliser):
    """Divide each jet by its maximum absolute value: ``forward(x)[b] = x[b] / scales[b]``.

    Fit on a batch of images (B, ..., 3) with :meth:`fit`; the scales are stored, so ``forward`` and
    ``inverse`` must be given that same batch of B jets, in the same order (any middle dims, e.g.
    (B, 125, 125, 3) or (B, N, 3)). Modes: ``"jet"`` scales (B,), one per jet; ``"channel"`` scales
    (B, 3), one per jet and channel; ``"global"`` one scale () for all jets (then any shape works).
    Use :meth:`subset` for the scaler of some of the jets.
    """

    kind = "per_jet_max"
    MODES = ("jet", "channel", "global")

    def __init__(self, scales, mode: str = "jet"):
        if mode not in self.MODES:
            raise ConfigError(f"PerJetMaxScaler mode must be one of {', '.join(self.MODES)}, got {mode!r}")
        try:
            scales = np.array(_to_numpy(scales), dtype=np.float64)
        except (TypeError, ValueError):
            raise ConfigError(f"PerJetMaxScaler scales must be numbers, got {scales!r}") from None
        want = {"jet": "(B,)", "channel": "(B, 3)", "global": "()"}[mode]
        ok = {
            "jet": scales.ndim == 1,
            "channel": scales.ndim == 2 and scales.shape[1:] == (3,),
            "global": scales.ndim == 0,
        }
        if not ok[mode]:
            raise ConfigError(
                f"PerJetMaxScaler mode {mode!r} needs scales of shape {want}, got {scales.shape}"
            )
        if not (np.isfinite(scales).all() and (scales > 0).all()):
            raise ConfigError("PerJetMaxScaler scales must be finite and positive")
        self.scales = scales
        self.mode = mode

    @classmethod
    def fit(cls, images, mode: str = "jet") -> PerJetMaxScaler:
        """Scales from a batch of images (B, ..., 3) (numpy or torch)."""
        return cls(max_scales(images, mode), mode)

    @property
    def n_jets(self) -> int | None:
        return None if self.mode == "global" else len(self.scales)

    def subset(self, indices) -> PerJetMaxScaler:
        """The scaler of jets ``indices`` (positions in the fitted batch)."""
        if self.mode == "global":
            return PerJetMaxScaler(self.scales.copy(), self.mode)
        return PerJetMaxScaler(
            self.scales[resolve_indices(indices, len(self.scales), "PerJetMaxScaler")], self.mode
        )

    def _broadcast(self, x):
        if self.mode == "global":
            return _const(self.scales, x)
        _check_channels(x, "PerJetMaxScaler input")
        if x.ndim < 2 or x.shape[0] != len(self.scales):
            raise DataError(
                f"PerJetMaxScaler was fitted on {len(self.scales)} jets; expected input "
                f"(B={len(self.scales)}, ..., 3), got shape {tuple(x.shape)}"
            )
        s = _const(self.scales, x)
        if self.mode == "jet":
            return s.reshape((len(self.scales),) + (1,) * (x.ndim - 1))
        return s.reshape((len(self.scales),) + (1,) * (x.ndim - 2) + (N_CHANNELS,))

    def forward(self, images):
        x = _as_float(images)
        return x / self._broadcast(x)

    def inverse(self, values):
        v = _as_float(values)
        return v * self._broadcast(v)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "mode": self.mode, "scales": self.scales.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> PerJetMaxScaler:
        _check_keys(d, cls.kind, {"mode", "scales"})
        return cls(d["scales"], d["mode"])


def intensity_forward(v, kind: str, scale: float):
    """``log1p(v / s)``, ``asinh(v / s)`` or ``sign(v) log1p(|v| / s)`` (kind ``signed_log1p``)."""
    v = _as_float(v)
    xp = _ops(v)
    u = v / scale
    if kind == "asinh":
        return xp.asinh(u) if xp is torch else np.arcsinh(u)
    if kind == "signed_log1p":
        return xp.sign(u) * xp.log1p(xp.abs(u))
    if kind == "log1p":
        if bool((u <= -1).any()):
            low = float(u.min()) * scale
            raise DataError(
                f"log1p transform: value {low:.6g} <= -scale ({-scale:.6g}) where log1p(v / scale) is "
                "undefined; use kind 'asinh' or 'signed_log1p' (both accept negatives) or a larger scale"
            )
        return xp.log1p(u)
    raise ConfigError(
        f"intensity transform kind must be one of {', '.join(IntensityTransform.KINDS)}, got {kind!r}"
    )


def intensity_inverse(y, kind: str, scale: float):
    """The exact inverse of :func:`intensity_forward`."""
    y = _as_float(y)
    xp = _ops(y)
    if kind == "asinh":
        return xp.sinh(y) * scale
    if kind == "signed_log1p":
        return xp.sign(y) * xp.expm1(xp.abs(y)) * scale
    if kind == "log1p":
        return xp.expm1(y) * scale
    raise ConfigError(
        f"intensity transform kind must be one of {', '.join(IntensityTransform.KINDS)}, got {kind!r}"
    )


class IntensityTransform(Normaliser):
    """A pointwise compressing transform of the heavy-tailed energies, exact inverse:
    ``"log1p"``: log1p(v / scale) (refuses v <= -scale with a :class:`DataError`);
    ``"asinh"``: asinh(v / scale) (odd, handles negative noise; ~log for v >> scale);
    ``"signed_log1p"``: sign(v) log1p(|v| / scale). ``scale`` > 0 in GeV sets where it turns over."""

    kind = "intensity"
    KINDS = ("log1p", "asinh", "signed_log1p")

    def __init__(self, transform: str = "asinh", scale: float = 1.0):
        if transform not in self.KINDS:
            raise ConfigError(
                f"intensity transform must be one of {', '.join(self.KINDS)}, got {transform!r}"
            )
        try:
            scale = float(scale)
        except (TypeError, ValueError):
            raise ConfigError(f"intensity transform scale must be a number, got {scale!r}") from None
        if not (math.isfinite(scale) and scale > 0):
            raise ConfigError(f"intensity transform scale must be finite and positive, got {scale!r}")
        self.transform = transform
        self.scale = scale

    def forward(self, images):
        return intensity_forward(images, self.transform, self.scale)

    def inverse(self, values):
        return intensity_inverse(values, self.transform, self.scale)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "transform": self.transform, "scale": self.scale}

    @classmethod
    def from_dict(cls, d: dict) -> IntensityTransform:
        _check_keys(d, cls.kind, {"transform"}, {"scale"})
        return cls(d["transform"], d.get("scale", 1.0))


class Compose(Normaliser):
    """A chain of normalisers: ``forward`` applies them in order, ``inverse`` in reverse order."""

    kind = "compose"

    def __init__(self, steps: Sequence[Normaliser]):
        steps = list(steps)
        for s in steps:
            if not isinstance(s, Normaliser):
                raise ConfigError(f"Compose steps must be normalisers, got {type(s).__name__}")
        self.steps = steps

    def forward(self, images):
        x = _as_float(images)
        for s in self.steps:
            x = s.forward(x)
        return x

    def inverse(self, values):
        v = _as_float(values)
        for s in reversed(self.steps):
            v = s.inverse(v)
        return v

    def to_dict(self) -> dict:
        return {"kind": self.kind, "steps": [s.to_dict() for s in self.steps]}

    @classmethod
    def from_dict(cls, d: dict) -> Compose:
        _check_keys(d, cls.kind, {"steps"})
        if not isinstance(d["steps"], list | tuple):
            raise ConfigError("normaliser 'compose': 'steps' must be a list of normaliser dicts")
        return cls([normaliser_from_dict(s) for s in d["steps"]])


_NORMALISERS: dict[str, type[Normaliser]] = {
    c.kind: c for c in (Identity, ChannelStandardiser, PerJetMaxScaler, IntensityTransform, Compose)
}


def normaliser_from_dict(d: dict) -> Normaliser:
    """Rebuild any normaliser from its ``to_dict()`` (unknown kinds or keys raise :class:`ConfigError`)."""
    if not isinstance(d, dict) or "kind" not in d:
        raise ConfigError(f"a normaliser must be a dict with a 'kind' key, got {d!r:.200}")
    cls = _NORMALISERS.get(d["kind"])
    if cls is None:
        raise ConfigError(
            f"unknown normaliser kind {d['kind']!r}; expected one of {', '.join(sorted(_NORMALISERS))}"
        )
    return cls.from_dict(d)


def normaliser_pre(kind: str, intensity_scale: float = 1.0):
    """The pointwise transform a run-wide normaliser of ``kind`` standardises after (asinh for
    ``asinh_standardiser``), or None."""
    return IntensityTransform("asinh", intensity_scale) if kind == "asinh_standardiser" else None


def needs_moments(kind: str) -> bool:
    """Whether the run-wide normaliser of ``kind`` is fitted from per-channel moments."""
    return kind in ("channel_standardiser", "asinh_standardiser")


def normaliser_moments(kind: str, images, intensity_scale: float = 1.0) -> Moments:
    """The per-channel moments of ``images`` (k, 125, 125, 3) a normaliser of ``kind`` is fitted from
    (of the transformed values for ``asinh_standardiser``)."""
    return channel_moments(images, pre=normaliser_pre(kind, intensity_scale))


def reduce_moments(parts: Sequence[Moments]) -> Moments:
    """Merge moments of disjoint sets pairwise, as a balanced tree in the order given: the same result
    wherever the parts were computed (a driver alone, or Dask workers)."""
    parts = list(parts)
    if not parts:
        return Moments.empty()
    while len(parts) > 1:
        parts = [
            merge_moments(*parts[i : i + 2]) if i + 1 < len(parts) else parts[i]
            for i in range(0, len(parts), 2)
        ]
    return parts[0]


def normaliser_from_moments(kind: str, moments: Moments, intensity_scale: float = 1.0, source: str = "jets"):
    """The run-wide normaliser of ``kind`` from the moments :func:`normaliser_moments` gives (None for
    per-jet kinds; Identity for ``identity``)."""
    if kind == "identity":
        return Identity()
    if not needs_moments(kind):
        return None
    std = ChannelStandardiser.from_moments(moments, source)
    pre = normaliser_pre(kind, intensity_scale)
    return std if pre is None else Compose([pre, std])


def fit_normaliser(kind: str, images=None, intensity_scale: float = 1.0):
    """The run-wide normaliser of ``kind`` fitted on ``images`` (k, 125, 125, 3) in memory (None for
    per-jet kinds, whose scales live with each jet): ``channel_standardiser`` is the global per-channel
    mean/std; ``asinh_standardiser`` is ``Compose([IntensityTransform("asinh", intensity_scale), s])``
    with s the ChannelStandardiser of the transformed values. Runs fit it chunk by chunk
    (:func:`normaliser_moments`, :func:`reduce_moments`, :func:`normaliser_from_moments`)."""
    if not needs_moments(kind):
        return normaliser_from_moments(kind, Moments.empty(), intensity_scale)
    return normaliser_from_moments(
        kind, normaliser_moments(kind, images, intensity_scale), intensity_scale, "images"
    )


def batch_normaliser(kind: str, global_norm, images: np.ndarray):
    """The normaliser of one batch of jets (B, ..., 3): the run-wide one, or fitted per jet."""

    if kind == "per_jet_max":
        return PerJetMaxScaler.fit(images, mode="jet")
    if global_norm is None:
        raise ConfigError(f"normalisation {kind!r} needs a fitted run-wide normaliser")
    return global_norm


def subset_normaliser(norm, positions: Sequence[int]):
    """The normaliser of the jets at ``positions`` of the batch ``norm`` was fitted on."""

    if isinstance(norm, Compose):
        return Compose([subset_normaliser(s, positions) for s in norm.steps])
    if getattr(norm, "n_jets", None) is not None and hasattr(norm, "subset"):
        return norm.subset(np.asarray(positions, dtype=np.int64))
    return norm


def jet_scales(norm) -> np.ndarray | None:
    """Per-jet scales of a PerJetMaxScaler (B,), or None for run-wide normalisers."""
    return np.asarray(norm.scales, dtype=np.float64) if getattr(norm, "kind", "") == "per_jet_max" else None
