"""Small helpers every layer uses: refusing unknown configuration keys, describing index lists,
checking positive integers, canonical hashes of tensors and jet images, the CPU's name. Pure functions;
they raise :mod:`inr_fast.errors` exceptions."""

from __future__ import annotations

import dataclasses
import hashlib
import platform
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from inr_fast.errors import ConfigError


def refuse_unknown(known: type | Iterable[str], d: object, what: str) -> None:
    """Raise ConfigError naming ``what`` when ``d`` is not a dict or has keys outside ``known`` (a
    dataclass, whose field names are the known keys, or an iterable of names)."""
    if not isinstance(d, dict):
        raise ConfigError(f"{what}: expected a dict of settings, got {type(d).__name__}")
    names = {f.name for f in dataclasses.fields(known)} if dataclasses.is_dataclass(known) else set(known)
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(
            f"{what}: unknown key(s) {', '.join(map(repr, unknown))}; known keys: {', '.join(sorted(names))}"
        )


def format_indices(indices: Sequence[int] | np.ndarray, limit: int = 8) -> str:
    """``"0, 1, 2 (and 5 more)"``: the first ``limit`` jet indices of a list, for messages."""
    idx = [int(i) for i in np.asarray(indices).reshape(-1)]
    text = ", ".join(str(i) for i in idx[:limit])
    if len(idx) > limit:
        text += f" (and {len(idx) - limit} more)"
    return text


def positive_int(value, name: str) -> int:
    """``value`` as an int; ConfigError unless it is an integer >= 1 (bool refused)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """Canonical sha256 of a tensor dict: for each name in sorted order, the name, dtype, shape and the
    raw bytes (C order, little-endian) are hashed in sequence. Independent of any file format."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().astype(t.numpy().dtype.newbyteorder("<"), copy=False).tobytes())
    return h.hexdigest()


#: bytes of a jet's content digest (:func:`jet_digests`)
DIGEST_BYTES = 16


def jet_digests(images: np.ndarray) -> np.ndarray:
    """Content digests of jets (k, H, W, C): BLAKE2b-128 of each jet's float32 little-endian C-order
    values (channels last) -> (k, 16) uint8. Equal jets give equal digests wherever the file lives."""
    x = np.ascontiguousarray(np.asarray(images, dtype="<f4"))
    out = np.zeros((len(x), DIGEST_BYTES), dtype=np.uint8)
    for j in range(len(x)):
        out[j] = np.frombuffer(hashlib.blake2b(x[j].tobytes(), digest_size=DIGEST_BYTES).digest(), np.uint8)
    return out


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo``'s model name where there is one), for timings' provenance."""
    try:
        with open("/proc/cpuinfo") as fh:
            name = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "")
    except OSError:
        name = ""
    return name or platform.processor() or platform.machine()
