"""The jet-image data layer: a validating, chunked HDF5 reader, coordinate grids, normalisers.

File layout (see :mod:`inr_fast.layout`): ``X_jets`` (N, 125, 125, 3) float32 channels-last
[ECAL, HCAL, Tracks] in GeV (or (N, 3, 125, 125) for channels-first copies), ``y`` (N,) label,
``m0`` (N,) jet mass, ``pt`` (N,) jet pT.

Memory never grows with N: :class:`JetFile` opens the file lazily (h5py reads nothing of ``X_jets`` on
open), reads only the jets asked for, and :meth:`JetFile.iter_chunks` streams a selection in chunks of
``chunk_size`` jets (about 190 kB per jet). NaN/Inf checks run on what is read, per read.

Normalisers map images (..., 3) to the values an INR is trained on and back, exactly invertible and
serialisable (``to_dict`` / :func:`normaliser_from_dict`): :class:`ChannelStandardiser` (the seed's
global per-channel mean/std, fitted streaming), :class:`PerJetMaxScaler`, :class:`IntensityTransform`
(log1p / asinh / signed log1p), :class:`Compose`, :class:`Identity`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import h5py
import numpy as np
import torch

from inr_fast.errors import ConfigError, DataError
from inr_fast.layout import (
    CHANNELS,
    GLUON,
    IMAGE_SIZE,
    KEY_IMAGES,
    KEY_LABEL,
    KEY_MASS,
    KEY_PT,
    N_CHANNELS,
    PITCH,
    QUARK,
    REQUIRED_KEYS,
)

__all__ = [
    "ChannelStandardiser",
    "Compose",
    "DataSummary",
    "Identity",
    "IntensityTransform",
    "JetFile",
    "Moments",
    "Normaliser",
    "PerJetMaxScaler",
    "channel_moments",
    "intensity_forward",
    "intensity_inverse",
    "max_scales",
    "mean_image",
    "merge_moments",
    "normaliser_from_dict",
    "physical_centres",
    "physical_grid",
    "pixel_centres",
    "pixel_grid",
    "resolve_indices",
    "standardise",
    "unstandardise",
]

IMAGE_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, N_CHANNELS)
IMAGE_SHAPE_CHANNELS_FIRST = (N_CHANNELS, IMAGE_SIZE, IMAGE_SIZE)
_DEFAULT_CHUNK_CACHE = 1 << 20  # h5py's default raw-chunk cache per dataset, bytes
_MAX_CHUNK_CACHE = 256 << 20

IndexSpec = Any  # None | int | str | slice | range | Sequence[int] | np.ndarray | torch.Tensor


# ----------------------------------------------------------------------------------------- indices


def _fmt_indices(idx: Sequence[int], limit: int = 8) -> str:
    idx = [int(i) for i in idx]
    text = ", ".join(str(i) for i in idx[:limit])
    if len(idx) > limit:
        text += f" (and {len(idx) - limit} more)"
    return text


def _out_of_range(source: str, index: int, n_jets: int) -> DataError:
    valid = f"0..{n_jets - 1} (or -{n_jets}..-1)" if n_jets else "none: the file has no jets"
    return DataError(
        f"{source}: jet index {index} is out of range: the file has {n_jets} jets, valid {valid}"
    )


def _parse_slice(text: str, n_jets: int, source: str, spec: str) -> np.ndarray:
    parts = text.split(":")
    if len(parts) > 3:
        raise ValueError
    values = [int(p) if p.strip() else None for p in parts]
    for bound in values[:2]:  # explicit bounds of a typed selection must lie inside the file
        if bound is not None and not -n_jets <= bound <= n_jets:
            raise _out_of_range(f"{source}: selection {spec!r}", bound, n_jets)
    if len(values) == 3 and values[2] == 0:
        raise ConfigError(f"{source}: selection {spec!r}: slice step cannot be zero")
    return np.arange(*slice(*values).indices(n_jets), dtype=np.int64)


def resolve_indices(spec: IndexSpec, n_jets: int, source: str = "jet selection") -> np.ndarray:
    """Turn a jet selection into validated, non-negative int64 indices, in the order given.

    ``spec``: ``None`` (all jets), an int (negative counts from the end), a string of comma-separated
    items each an int or a ``start:stop[:step]`` range (``"0,5,9"``, ``"10:20"``, ``"0,10:20,-1"``),
    a ``slice`` (Python semantics, bounds clipped), a ``range``, or a 1-D list/array/tensor of ints
    (any order, duplicates kept). Returns (k,) int64. Explicit indices (and the bounds written in a
    string) outside ``[-n_jets, n_jets)`` raise :class:`DataError` naming ``source``, the index and
    ``n_jets``; an unparsable spec raises :class:`ConfigError`.
    """
    n_jets = int(n_jets)
    if spec is None:
        return np.arange(n_jets, dtype=np.int64)
    if isinstance(spec, slice):
        return np.arange(*spec.indices(n_jets), dtype=np.int64)
    if isinstance(spec, str):
        items = [s.strip() for s in spec.split(",")]
        if not spec.strip() or any(not s for s in items):
            raise ConfigError(
                f"{source}: empty item in jet selection {spec!r}; expected e.g. '0,5,9' or '10:20'"
            )
        parts = []
        try:
            for item in items:
                if ":" in item:
                    parts.append(_parse_slice(item, n_jets, source, spec))
                else:
                    parts.append(np.array([int(item)], dtype=np.int64))
        except ValueError as err:
            if isinstance(err, DataError | ConfigError):
                raise
            raise ConfigError(
                f"{source}: cannot parse jet selection {spec!r}; expected comma-separated integers and "
                "start:stop ranges, e.g. '0,5,9' or '10:20'"
            ) from None
        arr = np.concatenate(parts)
    elif isinstance(spec, bool | np.bool_):
        raise ConfigError(f"{source}: jet selection must be integers, got the boolean {spec!r}")
    elif isinstance(spec, int | np.integer):
        arr = np.array([int(spec)], dtype=np.int64)
    else:
        if isinstance(spec, torch.Tensor):
            spec = spec.detach().cpu().numpy()
        arr = np.asarray(spec if not isinstance(spec, range) else np.arange(spec.start, spec.stop, spec.step))
        if arr.size == 0:
            return np.zeros(0, dtype=np.int64)
        if arr.dtype.kind not in "iu":
            raise ConfigError(
                f"{source}: jet indices must be integers, got an array of {arr.dtype} (boolean masks and "
                "floats are not accepted; use np.flatnonzero(mask))"
            )
        if arr.ndim == 0:
            arr = arr.reshape(1)
        elif arr.ndim != 1:
            raise ConfigError(f"{source}: jet indices must be one-dimensional, got shape {arr.shape}")
        arr = arr.astype(np.int64, copy=False)
    bad = (arr < -n_jets) | (arr >= n_jets)
    if bad.any():
        raise _out_of_range(source, int(arr[np.argmax(bad)]), n_jets)
    return np.where(arr < 0, arr + n_jets, arr).astype(np.int64, copy=False)


# ----------------------------------------------------------------------------------------- reader


@dataclass(frozen=True)
class DataSummary:
    """Statistics of a selection of jets (all sums in float64 over the un-normalised GeV values).

    ``channel_*`` are per channel in the order :data:`inr_fast.layout.CHANNELS`; ``channel_mean`` and
    ``channel_std`` are over all pixels of the selection (population std). Labels are counted with the
    convention of the files we write (quark = 1, gluon = 0); ``n_other_label`` counts anything else.
    Negative pixels are legal (calorimeter noise) and counted in ``channel_n_negative``.
    """

    path: str
    n_jets: int
    n_quark: int
    n_gluon: int
    n_other_label: int
    n_pixels: int
    channel_sum: tuple[float, float, float]
    channel_mean: tuple[float, float, float]
    channel_std: tuple[float, float, float]
    channel_min: tuple[float, float, float]
    channel_max: tuple[float, float, float]
    channel_zero_fraction: tuple[float, float, float]
    zero_fraction: float
    channel_n_negative: tuple[int, int, int]
    channel_negative_sum: tuple[float, float, float]
    n_jets_with_negative: int

    def to_dict(self) -> dict:
        return asdict(self)

    def format(self) -> str:
        """A small human-readable table."""
        lines = [
            f"{self.path}: {self.n_jets} jets ({self.n_quark} with y=1, {self.n_gluon} with y=0"
            + (f", {self.n_other_label} other" if self.n_other_label else "")
            + f"); zero pixels {100 * self.zero_fraction:.2f} %",
            f"{'channel':8s} {'sum [GeV]':>14s} {'mean':>11s} {'std':>11s} {'min':>10s} {'max':>10s} "
            f"{'zero %':>7s} {'n<0':>8s}",
        ]
        for c, name in enumerate(CHANNELS):
            lines.append(
                f"{name:8s} {self.channel_sum[c]:14.6g} {self.channel_mean[c]:11.4g} "
                f"{self.channel_std[c]:11.4g} "
                f"{self.channel_min[c]:10.4g} {self.channel_max[c]:10.4g} "
                f"{100 * self.channel_zero_fraction[c]:7.2f} {self.channel_n_negative[c]:8d}"
            )
        return "\n".join(lines)


class JetFile:
    """A jet-image HDF5 file, validated on open, read lazily by index in chunks.

    Use as a context manager (``with JetFile(path) as jf: ...``) or call :meth:`close`. Opening reads
    only metadata (shapes, dtypes); images are read on demand. ``channels_first=True`` accepts
    (N, 3, 125, 125) files; every read returns channels-last (k, 125, 125, 3) float32 regardless.
    ``check_values=True`` refuses NaN/Inf in what is read (and in ``m0``/``pt`` values asked for).
    Picklable (the copy reopens the file), so it can be handed to DataLoader workers.
    """

    def __init__(self, path: str | os.PathLike, channels_first: bool = False, check_values: bool = True):
        self.path = Path(path)
        self.channels_first = bool(channels_first)
        self.check_values = bool(check_values)
        self._file: h5py.File | None = None
        self._meta_cache: dict[str, np.ndarray] = {}
        self._open()

    # -- opening and validation
    def _open(self) -> None:
        path = self.path
        if not path.exists():
            raise DataError(
                f"{path}: no such file (expected an HDF5 jet file with datasets X_jets, y, m0, pt)"
            )
        if path.is_dir():
            raise DataError(f"{path}: is a directory, expected an HDF5 jet file")
        try:
            is_hdf5 = h5py.is_hdf5(path)
        except OSError as err:
            raise DataError(f"{path}: cannot read the file ({err})") from None
        if not is_hdf5:
            raise DataError(
                f"{path}: not an HDF5 file (expected an HDF5 jet file with datasets X_jets, y, m0, pt)"
            )
        try:
            self._file = h5py.File(path, "r")
        except OSError as err:
            raise DataError(f"{path}: cannot open as HDF5 ({err})") from None
        try:
            self._validate()
            self._size_chunk_cache()
        except BaseException:
            self.close()
            raise

    def _validate(self) -> None:
        f, path = self._file, self.path
        for key in REQUIRED_KEYS:
            if key not in f:
                raise DataError(
                    f"{path}: missing dataset '{key}' (found: {', '.join(sorted(f.keys())) or 'nothing'}); "
                    f"expected datasets {', '.join(REQUIRED_KEYS)}"
                )
            if not isinstance(f[key], h5py.Dataset):
                raise DataError(f"{path}: '{key}' is a {type(f[key]).__name__}, expected a dataset")
        images = f[KEY_IMAGES]
        expected, other = (
            (IMAGE_SHAPE_CHANNELS_FIRST, IMAGE_SHAPE)
            if self.channels_first
            else (IMAGE_SHAPE, IMAGE_SHAPE_CHANNELS_FIRST)
        )
        layout = "channels-first" if self.channels_first else "channels-last"
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            hint = ""
            if images.ndim == 4 and tuple(images.shape[1:]) == other:
                hint = (
                    " (this file looks channels-last: drop channels_first / --channels-first)"
                    if self.channels_first
                    else " (this file looks channels-first: pass channels_first=True / --channels-first)"
                )
            raise DataError(
                f"{path}: {KEY_IMAGES} has shape {tuple(images.shape)}, "
                f"expected (N, {', '.join(map(str, expected))}) {layout}{hint}"
            )
        if images.dtype != np.float32:
            raise DataError(f"{path}: {KEY_IMAGES} has dtype {images.dtype}, expected float32")
        n = images.shape[0]
        for key in (KEY_LABEL, KEY_MASS, KEY_PT):
            ds = f[key]
            shape = tuple(ds.shape)
            if not (shape == (n,) or shape == (n, 1)):
                raise DataError(
                    f"{path}: '{key}' has shape {shape} but {KEY_IMAGES} holds {n} jets; "
                    f"expected shape ({n},) (the lengths of {KEY_IMAGES}, y, m0 and pt must agree)"
                )
            if ds.dtype.kind not in "iufb":
                raise DataError(f"{path}: '{key}' has dtype {ds.dtype}, expected a numeric type")
        self._images = images
        self.n_jets = int(n)

    def _size_chunk_cache(self) -> None:
        """Reopen with a raw-chunk cache that holds two chunks when the file's chunks are large."""
        chunks = self._images.chunks
        if chunks is None:
            return
        nbytes = int(np.prod(chunks)) * self._images.dtype.itemsize
        if 2 * nbytes > _DEFAULT_CHUNK_CACHE:
            self._file.close()
            self._file = h5py.File(
                self.path, "r", rdcc_nbytes=min(2 * nbytes, _MAX_CHUNK_CACHE), rdcc_nslots=521
            )
            self._images = self._file[KEY_IMAGES]

    # -- housekeeping
    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            finally:
                self._file = None

    @property
    def closed(self) -> bool:
        return self._file is None

    def __enter__(self) -> JetFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass

    def __len__(self) -> int:
        return self.n_jets

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return (
            f"JetFile({str(self.path)!r}, n_jets={self.n_jets}, "
            f"channels_first={self.channels_first}, {state})"
        )

    def __getstate__(self) -> dict:
        return {
            "path": str(self.path),
            "channels_first": self.channels_first,
            "check_values": self.check_values,
        }

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state["channels_first"], state["check_values"])

    def _require_open(self) -> None:
        if self._file is None:
            raise DataError(f"{self.path}: the file is closed")

    @property
    def attrs(self) -> dict:
        """The file's root attributes (generator settings, seed, version for simulated files)."""
        self._require_open()
        return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in self._file.attrs.items()}

    def resolve(self, indices: IndexSpec = None) -> np.ndarray:
        """:func:`resolve_indices` against this file: (k,) non-negative int64, errors name the file."""
        return resolve_indices(indices, self.n_jets, source=str(self.path))

    # -- images
    def _read_sorted_unique(self, uniq: np.ndarray) -> np.ndarray:
        """Read strictly increasing indices (u,) into a fresh (u, ...) array in file layout, one HDF5
        read per contiguous run of indices (no temporary copies)."""
        out = np.empty((len(uniq), *self._images.shape[1:]), dtype=np.float32)
        if len(uniq) == 0:
            return out
        starts = np.concatenate([[0], np.flatnonzero(np.diff(uniq) != 1) + 1])
        ends = np.concatenate([starts[1:], [len(uniq)]])
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            first = int(uniq[s])
            try:
                self._images.read_direct(out, np.s_[first : first + (e - s)], np.s_[s:e])
            except (OSError, RuntimeError, ValueError) as err:
                raise DataError(
                    f"{self.path}: cannot read {KEY_IMAGES} at jet indices "
                    f"{first}..{first + e - s - 1} ({err})"
                ) from None
        return out

    def _check_finite(self, data: np.ndarray, jet_indices: np.ndarray) -> None:
        # A float64 sum of float32 values cannot overflow, so it is finite iff every value is finite.
        sums = np.add.reduce(data.reshape(len(data), math.prod(data.shape[1:])), axis=1, dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(sums))
        if bad.size == 0:
            return
        first = data[bad[0]]
        n_nan, n_inf = int(np.isnan(first).sum()), int(np.isinf(first).sum())
        which = "jet index" if bad.size == 1 else "jet indices"
        raise DataError(
            f"{self.path}: non-finite values in {KEY_IMAGES} at {which} {_fmt_indices(jet_indices[bad])} "
            f"(jet {int(jet_indices[bad[0]])} has {n_nan} NaN and {n_inf} Inf pixels); "
            "expected finite energies"
        )

    def read(self, indices: IndexSpec) -> np.ndarray:
        """Images of the selected jets, (k, 125, 125, 3) float32 channels-last, in the order asked.

        ``indices``: anything :func:`resolve_indices` accepts (an int gives k = 1). Reads sorted unique
        indices (contiguous runs in one HDF5 call each) and un-permutes, so any order and duplicates
        are fine. Out of range, and NaN/Inf with ``check_values``, raise :class:`DataError`.
        """
        self._require_open()
        idx = self.resolve(indices)
        uniq, inverse = np.unique(idx, return_inverse=True)
        data = self._read_sorted_unique(uniq)
        if self.check_values:
            self._check_finite(data, uniq)
        if self.channels_first:
            data = np.ascontiguousarray(data.transpose(0, 2, 3, 1))
        if len(uniq) == len(idx) and np.array_equal(uniq, idx):
            return data
        return data[inverse.reshape(-1)]

    def read_one(self, index: int) -> np.ndarray:
        """The image of one jet, (125, 125, 3) float32 channels-last."""
        if isinstance(index, bool) or not isinstance(index, int | np.integer):
            raise ConfigError(f"{self.path}: read_one needs one integer jet index, got {index!r}")
        return self.read(int(index))[0]

    def iter_chunks(
        self, indices: IndexSpec = None, chunk_size: int = 256
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Stream a selection in order: yields ``(idx (k,) int64, images (k, 125, 125, 3) float32)`` with
        k <= ``chunk_size``; memory is bounded by one chunk (the caller may drop each after use)."""
        chunk_size = _positive_int(chunk_size, "chunk_size")
        idx = self.resolve(indices)
        for start in range(0, len(idx), chunk_size):
            sel = idx[start : start + chunk_size]
            yield sel, self.read(sel)

    # -- per-jet scalars
    def _meta(self, key: str) -> np.ndarray:
        self._require_open()
        if key not in self._meta_cache:
            self._meta_cache[key] = np.asarray(self._file[key][()]).reshape(-1)
        return self._meta_cache[key]

    def _scalar(self, key: str, indices: IndexSpec) -> np.ndarray:
        idx = self.resolve(indices)
        values = self._meta(key)[idx].astype(np.float64)
        if self.check_values:
            bad = np.flatnonzero(~np.isfinite(values))
            if bad.size:
                raise DataError(
                    f"{self.path}: non-finite '{key}' at jet index {_fmt_indices(idx[bad])}; "
                    "expected finite values"
                )
        return values

    def labels(self, indices: IndexSpec = None) -> np.ndarray:
        """Labels ``y`` of the selection, (k,) int64 (quark = 1, gluon = 0 in files we write; the
        public file's convention is not certain). Non-integral labels raise :class:`DataError`."""
        idx = self.resolve(indices)
        raw = self._meta(KEY_LABEL)[idx]
        if raw.dtype.kind in "iub":
            return raw.astype(np.int64)
        bad = np.flatnonzero(~np.isfinite(raw) | (raw != np.round(raw)))
        if bad.size:
            raise DataError(
                f"{self.path}: label 'y' at jet index {_fmt_indices(idx[bad])} is {raw[bad[0]]!r}, "
                "expected an integer"
            )
        return raw.astype(np.int64)

    def masses(self, indices: IndexSpec = None) -> np.ndarray:
        """Jet masses ``m0`` of the selection, (k,) float64 in GeV."""
        return self._scalar(KEY_MASS, indices)

    def pts(self, indices: IndexSpec = None) -> np.ndarray:
        """Jet transverse momenta ``pt`` of the selection, (k,) float64 in GeV."""
        return self._scalar(KEY_PT, indices)

    # -- statistics
    def summary(self, indices: IndexSpec = None, chunk_size: int = 256) -> DataSummary:
        """Stream over the selection once and return its :class:`DataSummary`."""
        idx = self.resolve(indices)
        labels = self.labels(idx)
        moments = Moments.empty()
        total = np.zeros(N_CHANNELS)
        cmin = np.full(N_CHANNELS, np.inf)
        cmax = np.full(N_CHANNELS, -np.inf)
        n_zero = np.zeros(N_CHANNELS, dtype=np.int64)
        n_neg = np.zeros(N_CHANNELS, dtype=np.int64)
        neg_sum = np.zeros(N_CHANNELS)
        jets_neg = 0
        for _, images in self.iter_chunks(idx, chunk_size):
            flat = images.reshape(len(images), -1, N_CHANNELS)
            moments = merge_moments(moments, channel_moments(images))
            total += np.add.reduce(flat, axis=(0, 1), dtype=np.float64)
            cmin = np.minimum(cmin, flat.min(axis=(0, 1)))
            cmax = np.maximum(cmax, flat.max(axis=(0, 1)))
            n_zero += (flat == 0).sum(axis=(0, 1))
            negative = flat < 0
            n_neg += negative.sum(axis=(0, 1))
            neg_sum += np.add.reduce(np.where(negative, flat, 0), axis=(0, 1), dtype=np.float64)
            jets_neg += int(negative.any(axis=(1, 2)).sum())
        n_pix_channel = len(idx) * IMAGE_SIZE * IMAGE_SIZE
        std = np.sqrt(moments.m2 / moments.count) if moments.count else np.zeros(N_CHANNELS)
        zero_frac = n_zero / n_pix_channel if n_pix_channel else np.zeros(N_CHANNELS)

        def t(a, cast=float):
            return tuple(cast(v) for v in a)

        return DataSummary(
            path=str(self.path),
            n_jets=len(idx),
            n_quark=int((labels == QUARK).sum()),
            n_gluon=int((labels == GLUON).sum()),
            n_other_label=int(((labels != QUARK) & (labels != GLUON)).sum()),
            n_pixels=n_pix_channel * N_CHANNELS,
            channel_sum=t(total),
            channel_mean=t(moments.mean),
            channel_std=t(std),
            channel_min=t(cmin if len(idx) else np.zeros(N_CHANNELS)),
            channel_max=t(cmax if len(idx) else np.zeros(N_CHANNELS)),
            channel_zero_fraction=t(zero_frac),
            zero_fraction=float(n_zero.sum() / (n_pix_channel * N_CHANNELS)) if n_pix_channel else 0.0,
            channel_n_negative=t(n_neg, int),
            channel_negative_sum=t(neg_sum),
            n_jets_with_negative=jets_neg,
        )


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def mean_image(jetfile: JetFile, indices: IndexSpec = None, chunk_size: int = 256) -> np.ndarray:
    """Average image of a selection, (125, 125, 3) float64, streamed in chunks (float64 sums)."""
    total = np.zeros(IMAGE_SHAPE)
    n = 0
    for idx, images in jetfile.iter_chunks(indices, chunk_size):
        total += np.add.reduce(images, axis=0, dtype=np.float64)
        n += len(idx)
    if n == 0:
        raise DataError(f"{jetfile.path}: the jet selection is empty; cannot average it")
    return total / n


# ----------------------------------------------------------------------------------------- grids


def pixel_centres(size: int = IMAGE_SIZE) -> np.ndarray:
    """Pixel centres along one axis in [-1, 1]: ``(i + 0.5) / size * 2 - 1``, (size,) float64."""
    size = _positive_int(size, "size")
    return (np.arange(size, dtype=np.float64) + 0.5) / size * 2.0 - 1.0


def physical_centres(size: int = IMAGE_SIZE, pitch: float = PITCH) -> np.ndarray:
    """Pixel centres along one axis relative to the image centre in physical units:
    ``(i + 0.5 - size / 2) * pitch``, (size,) float64 (for 125 pixels the middle one is 0)."""
    size = _positive_int(size, "size")
    return (np.arange(size, dtype=np.float64) + 0.5 - size / 2.0) * float(pitch)


def _grid(centres: np.ndarray, dtype: torch.dtype, device) -> torch.Tensor:
    c = torch.from_numpy(centres)
    rows, cols = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=1).to(dtype=dtype, device=device)


def pixel_grid(size: int = IMAGE_SIZE, dtype: torch.dtype = torch.float32, device="cpu") -> torch.Tensor:
    """Pixel-centre coordinates in [-1, 1]^2, (size * size, 2).

    Column 0 is the row axis (eta, image axis 0), column 1 the column axis (phi, image axis 1); rows
    are in row-major order, so ``image.reshape(size * size, 3)`` lines up with the grid: entry
    ``i * size + j`` is pixel (i, j) at ``(pixel_centres(size)[i], pixel_centres(size)[j])``.
    """
    return _grid(pixel_centres(size), dtype, device)


def physical_grid(
    size: int = IMAGE_SIZE, pitch: float = PITCH, dtype: torch.dtype = torch.float32, device="cpu"
) -> torch.Tensor:
    """Pixel centres as (delta-eta, delta-phi) relative to the image centre, (size * size, 2), same
    order as :func:`pixel_grid`; equals ``pixel_grid(size) * size / 2 * pitch``."""
    return _grid(physical_centres(size, pitch), dtype, device)


# ----------------------------------------------------------------------------------------- moments


class Moments(NamedTuple):
    """Per-channel count, mean (3,) and sum of squared deviations m2 (3,), all float64."""

    count: int
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def empty(cls) -> Moments:
        return cls(0, np.zeros(N_CHANNELS), np.zeros(N_CHANNELS))


def channel_moments(images, block: int = 32, pre: Normaliser | None = None) -> Moments:
    """Per-channel moments of images (..., 3) (numpy or torch), in float64, two-pass per block of
    ``block`` leading entries (so at most ``block`` images are converted to float64 at a time).
    ``pre``: a normaliser applied to each float64 block first (moments of ``pre.forward(images)``)."""
    x = _to_numpy(images)
    _check_channels(x, "images")
    lead = x.reshape(-1, *x.shape[-3:]) if x.ndim >= 4 else x.reshape(1, -1, N_CHANNELS)
    out = Moments.empty()
    for start in range(0, len(lead), block):
        b = lead[start : start + block].astype(np.float64).reshape(-1, N_CHANNELS)
        if pre is not None:
            b = _to_numpy(pre.forward(b))
        if len(b) == 0:
            continue
        mean = b.mean(axis=0)
        m2 = np.square(b - mean).sum(axis=0)
        out = merge_moments(out, Moments(len(b), mean, m2))
    return out


def merge_moments(a: Moments, b: Moments) -> Moments:
    """Combine the moments of two disjoint sets (Chan, Golub & LeVeque), exact in exact arithmetic."""
    if a.count == 0:
        return b
    if b.count == 0:
        return a
    n = a.count + b.count
    delta = b.mean - a.mean
    mean = a.mean + delta * (b.count / n)
    m2 = a.m2 + b.m2 + np.square(delta) * (a.count * b.count / n)
    return Moments(n, mean, m2)


# ----------------------------------------------------------------------------------------- normalisers


def _to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _check_channels(x, what: str) -> None:
    if x.ndim < 1 or x.shape[-1] != N_CHANNELS:
        raise DataError(
            f"{what}: expected channels-last values (..., {N_CHANNELS}), got shape {tuple(x.shape)}"
        )


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
    keys = set(d) - {"kind"}
    unknown = keys - required - set(optional)
    missing = required - keys
    if unknown:
        raise ConfigError(
            f"normaliser '{kind}': unknown key(s) {', '.join(sorted(unknown))}; "
            f"expected {', '.join(sorted(required | set(optional)))}"
        )
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
