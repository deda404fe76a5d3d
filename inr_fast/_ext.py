"""Loading the compiled extension, which registers the ``torch.ops.inr_fast`` operators.

Which backend really runs, and why, for the trainer and the reports to print:

- :func:`extension_status` -> :class:`ExtensionStatus`: did ``inr_fast._C`` load, from where, with
  or without CUDA kernels, what it was built against (``inr_fast/_build_info.py``, written by
  setup.py), and the load error when it did not load.
- :func:`backend_choice` -> :class:`BackendChoice`: the backend a fit uses (``fused`` or
  ``reference``) for a requested one (``auto``, ``fused``, ``reference``), with a one-line reason;
  ``str(choice)`` for a summary line, ``choice.as_dict()`` for JSON.

Before importing the extension its build record is checked: an extension built against another torch
(or CUDA) is not loaded (it could crash or miss symbols); the error names both versions and the
rebuild command. When the extension is not built or does not load, the first caller that falls back to the
PyTorch reference (:func:`extension_available`, ``backend_choice("auto")``) emits one
:class:`ExtensionLoadWarning` per process carrying the load error; :func:`load` raises
:class:`ExtensionMissingError` with the same text.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import warnings
from dataclasses import dataclass, field
from types import ModuleType

BUILD_HINT = (
    "build it with `make build` (or `pip install --no-build-isolation -e .`, or "
    "`python setup.py build_ext --inplace`) against the installed torch"
)
REBUILD_PIP = "python -m pip install --no-build-isolation --no-cache-dir --force-reinstall --no-deps"


class ExtensionMissingError(ImportError):
    """The compiled extension is not built, does not load, or lacks an operator."""


class ExtensionLoadWarning(RuntimeWarning):
    """The compiled extension did not load: backend ``auto`` runs the (much slower) PyTorch reference."""


@dataclass(frozen=True)
class ExtensionStatus:
    """The state of ``inr_fast._C`` in this process."""

    loaded: bool
    cuda_built: bool  # compiled with its CUDA kernels (from the build record when not loaded; no GPU query)
    error: str | None  # why it did not load; None when it loaded
    path: str | None  # the shared library, when found
    built_against: dict = field(default_factory=dict)  # inr_fast/_build_info.py; {} when unknown

    def kernels(self) -> str:
        """The kernels compiled in: ``CPU`` or e.g. ``CPU + CUDA (arch 8.0;9.0+PTX; CUDA 13.0)``."""
        if not self.cuda_built:
            return "CPU"
        arch, cuda = self.built_against.get("CUDA_ARCH_LIST"), self.built_against.get("CUDA_TOOLKIT")
        extra = "; ".join(s for s in (arch and f"arch {arch}", cuda and f"CUDA {cuda}") if s)
        return "CPU + CUDA" + (f" ({extra})" if extra else "")

    def describe(self) -> str:
        """One line: what loaded and what it was built against, or why nothing loaded."""
        if not self.loaded:
            return f"compiled kernels not loaded: {self.error}"
        torch_v = self.built_against.get("TORCH_VERSION")
        against = f"torch {torch_v}" if torch_v else "an unrecorded torch (no inr_fast/_build_info.py)"
        return f"compiled {self.kernels()} kernels from {self.path}, built against {against}"

    def as_dict(self) -> dict:
        return {
            "loaded": self.loaded,
            "cuda_built": self.cuda_built,
            "error": self.error,
            "path": self.path,
            "built_against": dict(self.built_against),
        }


@dataclass(frozen=True)
class BackendChoice:
    """The backend a fit runs for the one requested, and why."""

    requested: str  # "auto", "fused" or "reference"
    backend: str  # "fused" or "reference": what runs
    reason: str
    extension: ExtensionStatus

    def __str__(self) -> str:
        return f"{self.backend} ({self.reason})"

    def as_dict(self) -> dict:
        return {
            "requested": self.requested,
            "backend": self.backend,
            "reason": self.reason,
            "extension": self.extension.as_dict(),
        }


# ------------------------------------------------------------------------------------------ loading


def _package_dir() -> str:
    return list(importlib.util.find_spec("inr_fast").submodule_search_locations)[0]


def _read_build_info() -> dict:
    """The record setup.py wrote next to the extension ({} for a build without one)."""
    try:
        mod = importlib.import_module("inr_fast._build_info")
    except ImportError:
        return {}
    return {k: v for k, v in vars(mod).items() if k.isupper()}


def rebuild_command(info: dict | None = None) -> str:
    """The command that rebuilds the extension against the installed torch, for this install."""
    checkout = os.path.dirname(_package_dir())
    if os.path.isfile(os.path.join(checkout, "setup.py")):
        return f"`make build` or `python setup.py build_ext --inplace` in {checkout}"
    src = (info or {}).get("SOURCE_DIR")
    if src and os.path.isfile(os.path.join(src, "setup.py")):
        return f"`{REBUILD_PIP} {src}`"
    return f"`{REBUILD_PIP} SOURCE` (SOURCE: the inr_fast source directory or sdist you installed from)"


def _version_problem(info: dict) -> str | None:
    """Why an extension built as `info` says cannot be loaded under the installed torch, or None."""
    import torch

    built, built_cuda = info.get("TORCH_VERSION"), info.get("TORCH_CUDA")
    if built is None:
        return None
    if built == torch.__version__ and built_cuda == torch.version.cuda:
        return None
    return (
        f"inr_fast._C was built against torch {built} (CUDA {built_cuda or 'none'}) but torch "
        f"{torch.__version__} (CUDA {torch.version.cuda or 'none'}) is installed; rebuild it against "
        f"this torch: {rebuild_command(info)}"
    )


def _find_extension() -> str | None:
    """The path of the built extension, or None when it is not built."""
    spec = importlib.util.find_spec("inr_fast._C")
    return spec.origin if spec is not None else None


def _import_extension() -> ModuleType:
    return importlib.import_module("inr_fast._C")


@functools.cache
def _state() -> tuple[ModuleType | None, ExtensionStatus]:
    import torch  # noqa: F401  (the extension links against libtorch)

    info = _read_build_info()
    path = _find_extension()
    fail = lambda error: (None, ExtensionStatus(False, bool(info.get("CUDA_BUILT")), error, path, info))  # noqa: E731
    if path is None:
        return fail(f"the compiled extension inr_fast._C is not built; {BUILD_HINT}")
    problem = _version_problem(info)
    if problem is not None:
        return fail(problem)
    try:
        mod = _import_extension()
    except (ImportError, OSError) as err:
        return fail(f"importing {path} failed: {err}; rebuild it: {rebuild_command(info)}")
    return mod, ExtensionStatus(True, bool(getattr(mod, "CUDA_BUILT", 0)), None, path, info)


_warned = False


def _warn_fallback(status: ExtensionStatus) -> None:
    """One ExtensionLoadWarning per process, from the first caller that falls back."""
    global _warned
    if status.loaded or _warned:
        return
    _warned = True
    warnings.warn(
        "inr_fast: the compiled extension did not load, so backend 'auto' runs the PyTorch reference "
        f"(much slower): {status.error}",
        ExtensionLoadWarning,
        stacklevel=3,
    )


def _reset() -> None:
    """Forget the load attempt and the warning (tests)."""
    global _warned
    _state.cache_clear()
    _warned = False


def _load() -> ModuleType | None:
    return _state()[0]


def load() -> ModuleType:
    """Import ``inr_fast._C`` (registering its operators) or raise a clear error."""
    mod, status = _state()
    if mod is None:
        raise ExtensionMissingError(f"inr_fast: {status.error}")
    return mod


def extension_status() -> ExtensionStatus:
    """Whether the compiled extension loaded, what it was built against, or why it did not load."""
    return _state()[1]


def extension_available() -> bool:
    """True when the compiled extension loads; when it does not, warns once (ExtensionLoadWarning:
    the caller falls back to the reference)."""
    status = extension_status()
    _warn_fallback(status)
    return status.loaded


def cuda_built() -> bool:
    """True when the extension loaded and was compiled with its CUDA kernels (says nothing about a GPU)."""
    return extension_status().cuda_built and _load() is not None


def backend_choice(requested: str = "auto", *, device="cpu", unsupported: str | None = None) -> BackendChoice:
    """The backend a fit runs and why. ``device``: "cpu", "cuda" or a torch.device. ``unsupported``:
    the caller's reason why the fused kernels do not apply to this model/device (e.g. "width 96 has no
    fused kernel"), or None; ``auto`` then picks the reference. Warns once (ExtensionLoadWarning) when
    ``auto`` falls back because the extension did not load. ``requested="fused"`` is reported as
    ``fused`` even when it cannot run (the trainer raises); the reason says why."""
    device = getattr(device, "type", device)
    status = extension_status()
    no_cuda = device == "cuda" and status.loaded and not status.cuda_built
    if requested == "reference":
        return BackendChoice(requested, "reference", "requested: the PyTorch reference", status)
    if requested == "fused":
        if not status.loaded:
            reason = f"requested, but it cannot run: {status.error}"
        elif no_cuda:
            reason = "requested, but the extension was built without its CUDA kernels"
        else:
            reason = f"requested: {status.describe()}"
        return BackendChoice(requested, "fused", reason, status)
    if requested != "auto":
        raise ValueError(f"backend must be 'auto', 'fused' or 'reference', got {requested!r}")
    if unsupported:
        return BackendChoice(requested, "reference", f"auto: {unsupported}", status)
    if not status.loaded:
        _warn_fallback(status)
        return BackendChoice(
            requested, "reference", f"auto fell back to the PyTorch reference: {status.error}", status
        )
    if no_cuda:
        return BackendChoice(
            requested, "reference", "auto: the extension was built without its CUDA kernels", status
        )
    return BackendChoice(requested, "fused", f"auto: {status.describe()}", status)


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
