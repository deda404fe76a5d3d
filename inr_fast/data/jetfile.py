"""The jet file: a validating HDF5 reader that reads jets lazily, by index, in chunks.

File layout (see :mod:`inr_fast.layout`): ``X_jets`` (N, 125, 125, 3) float32 channels-last
[ECAL, HCAL, Tracks] in GeV (or (N, 3, 125, 125) for channels-first copies), ``y`` (N,) label,
``m0`` (N,) jet mass, ``pt`` (N,) jet pT.

Memory never grows with N: :class:`JetFile` opens the file lazily (h5py reads nothing of ``X_jets`` on
open), reads only the jets asked for, and :meth:`JetFile.iter_chunks` streams a selection in chunks of
``chunk_size`` jets (about 190 kB per jet). NaN/Inf checks run on what is read, per read.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from inr_fast.data.moments import Moments, channel_moments, merge_moments
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
    QUARK,
    REQUIRED_KEYS,
)
from inr_fast.util import format_indices, positive_int

IMAGE_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, N_CHANNELS)
IMAGE_SHAPE_CHANNELS_FIRST = (N_CHANNELS, IMAGE_SIZE, IMAGE_SIZE)
_DEFAULT_CHUNK_CACHE = 1 << 20  # h5py's default raw-chunk cache per dataset, bytes
_MAX_CHUNK_CACHE = 256 << 20

IndexSpec = Any  # None | int | str | slice | range | Sequence[int] | np.ndarray | torch.Tensor


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
    ``locking``: HDF5 file locking (None: the library's default, or the ``HDF5_USE_FILE_LOCKING``
    environment variable; False for NFS/Lustre file systems where locks fail). ``jf[i]`` is one jet
    (125, 125, 3), ``jf[a:b]`` or ``jf[[i, j]]`` several. Picklable (the copy reopens the file), so it
    can be handed to DataLoader or Dask workers; :class:`JetDataset` is the torch Dataset over a file.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        channels_first: bool = False,
        check_values: bool = True,
        locking: bool | None = None,
    ):
        self.path = Path(path)
        self.channels_first = bool(channels_first)
        self.check_values = bool(check_values)
        self.locking = locking
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
            self._file = h5py.File(path, "r", locking=self.locking)
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
        if images.dtype.kind != "f" or images.dtype.itemsize != 4:  # either byte order; reads convert
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
                self.path,
                "r",
                rdcc_nbytes=min(2 * nbytes, _MAX_CHUNK_CACHE),
                rdcc_nslots=521,
                locking=self.locking,
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

    def __getitem__(self, key) -> np.ndarray:
        """``jf[i]``: one jet (125, 125, 3); ``jf[a:b]``, ``jf[[i, j]]``: (k, 125, 125, 3) float32."""
        if isinstance(key, int | np.integer):
            return self.read_one(int(key))
        return self.read(key)

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
            "locking": self.locking,
        }

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state["channels_first"], state["check_values"], state.get("locking"))

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
            f"{self.path}: non-finite values in {KEY_IMAGES} at {which} {format_indices(jet_indices[bad])} "
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
        chunk_size = positive_int(chunk_size, "chunk_size")
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
                    f"{self.path}: non-finite '{key}' at jet index {format_indices(idx[bad])}; "
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
                f"{self.path}: label 'y' at jet index {format_indices(idx[bad])} is {raw[bad[0]]!r}, "
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


class JetDataset(torch.utils.data.Dataset):
    """A torch Dataset over the jets of a file: item i is (image (125, 125, 3) float32 tensor in GeV,
    label int) of the i-th selected jet, or ``transform(image, label)`` when given. The file is opened
    lazily in each process, so the dataset works with ``DataLoader(num_workers=...)``.

        loader = DataLoader(JetDataset("jets.h5", indices="0:1000"), batch_size=64, num_workers=2)
    """

    def __init__(
        self, path, indices: IndexSpec = None, channels_first: bool = False, transform=None, locking=None
    ):
        self.path, self.channels_first, self.transform, self.locking = (
            str(path),
            channels_first,
            transform,
            locking,
        )
        with JetFile(path, channels_first, locking=locking) as jf:
            self.indices = jf.resolve(indices)
        self._file: JetFile | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        if self._file is None:
            self._file = JetFile(self.path, self.channels_first, locking=self.locking)
        index = int(self.indices[i])
        image = torch.from_numpy(self._file.read_one(index))
        label = int(self._file.labels(index)[0])
        return (image, label) if self.transform is None else self.transform(image, label)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_file": None}


#: a pixel above this (GeV) is not a jet-image energy (the LHC's beams carry 6,800 GeV per proton)
IMPLAUSIBLE_GEV = 1e4


def implausible_jets(images: np.ndarray, indices) -> list[str]:
    """Why jets of ``images`` (k, H, W, C) look wrong for energies in GeV, one line per jet (empty when
    all look plausible): pixels above :data:`IMPLAUSIBLE_GEV` (another unit?) or non-zero pixels that
    are all negative (a sign flip?). Fits still run; the trainer warns with these lines."""
    x = np.asarray(images).reshape(len(images), -1)
    out = []
    for j, row in enumerate(x):
        top = float(row.max(initial=0.0))
        if top > IMPLAUSIBLE_GEV:
            out.append(f"jet {int(indices[j])}: a pixel of {top:.3g} GeV (energies in GeV expected)")
        elif row.min(initial=0.0) < 0 and top <= 0:
            out.append(f"jet {int(indices[j])}: every non-zero pixel is negative (a sign flip?)")
    return out


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
