"""inr_fast: fast implicit neural representations of particle-physics jet images.

The compiled kernels (``inr_fast._C``) load lazily, on the first use of an operator, so importing
the package never needs a built extension or queries a GPU.
"""

from inr_fast._ext import (
    ExtensionLoadWarning,
    backend_choice,
    cuda_built,
    extension_available,
    extension_status,
)

__version__ = "0.1.0"

__all__ = [
    "ExtensionLoadWarning",
    "__version__",
    "backend_choice",
    "cuda_built",
    "extension_available",
    "extension_status",
    "fit",
]


def __getattr__(name: str):
    # `inr_fast.fit` imports the trainer (and torch) only when first used.
    if name == "fit":
        from inr_fast.train.api import fit

        return fit
    raise AttributeError(f"module 'inr_fast' has no attribute {name!r}")
