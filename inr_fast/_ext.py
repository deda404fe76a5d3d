"""Loading the compiled extension, which registers the ``torch.ops.inr_fast`` operators."""

from __future__ import annotations

import functools
import importlib
from types import ModuleType

BUILD_HINT = (
    "build it with `make build` (or `pip install --no-build-isolation -e .`, or "
    "`python setup.py build_ext --inplace`) against the installed torch"
)


class ExtensionMissingError(ImportError):
    """The compiled extension is not built, or lacks an operator."""


@functools.cache
def _load() -> ModuleType | None:
    import torch  # noqa: F401  (the extension links against libtorch)

    try:
        return importlib.import_module("inr_fast._C")
    except ImportError:
        return None


def load() -> ModuleType:
    """Import ``inr_fast._C`` (registering its operators) or raise a clear error."""
    mod = _load()
    if mod is None:
        raise ExtensionMissingError(f"inr_fast: the compiled extension inr_fast._C is missing; {BUILD_HINT}.")
    return mod


def extension_available() -> bool:
    """True when the compiled extension imports."""
    return _load() is not None


def cuda_built() -> bool:
    """True when the extension was compiled with its CUDA kernels (says nothing about a GPU)."""
    mod = _load()
    return bool(mod is not None and getattr(mod, "CUDA_BUILT", 0))


def require_op(name: str):
    """Return ``torch.ops.inr_fast.<name>``, with a clear error when the extension lacks it."""
    import torch

    load()
    try:
        return getattr(torch.ops.inr_fast, name)
    except (AttributeError, RuntimeError) as err:
        raise ExtensionMissingError(
            f"inr_fast: the compiled extension has no operator inr_fast::{name}; rebuild it ({BUILD_HINT})."
        ) from err


def gpu_ready() -> bool:
    """True when a CUDA device is visible AND the extension has its CUDA kernels (the `gpu` tests'
    condition). Queries the device only when called, never at import."""
    import torch

    return torch.cuda.is_available() and cuda_built()
