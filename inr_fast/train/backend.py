"""Where and how the networks run: device and autocast choice, and the backend (the pure-PyTorch
reference or the fused kernels) behind one forward interface and one fused loss-and-gradient step."""

from __future__ import annotations

from collections.abc import Callable

import torch

from inr_fast import _ext
from inr_fast.errors import ConfigError, InrFastError
from inr_fast.model.encoding import positional_encoding
from inr_fast.model.reference import batched_mlp, init_spec_params, mlp_on_features, spec_forward
from inr_fast.model.spec import FUSED_WIDTHS, ModelSpec
from inr_fast.train.config import BACKENDS

ForwardFn = Callable[[torch.Tensor, list[torch.Tensor], list[torch.Tensor]], torch.Tensor]


def _ops():
    """:mod:`inr_fast.ops`, imported on first use: importing it loads the compiled extension, which is
    optional (the reference backend works without it)."""
    from inr_fast import ops

    return ops


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto``: CUDA when available, else CPU; ``cuda`` without a GPU is a clear error."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                "--device cuda: no CUDA GPU is available to torch here; use --device cpu or auto"
            )
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"device must be auto, cpu or cuda, got {name!r}")


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device`` (None: float32, no autocast)."""
    if amp == "off":
        return None
    if amp == "auto":
        return torch.float16 if device.type == "cuda" else None
    if amp == "fp16":
        if device.type != "cuda":
            raise ConfigError("amp fp16 needs a CUDA device; on the CPU use amp 'off' or 'bf16'")
        return torch.float16
    return torch.bfloat16


def backend_choice(backend: str, spec: ModelSpec, device: torch.device) -> _ext.BackendChoice:
    """The backend a fit runs and why (:func:`inr_fast._ext.backend_choice`): ``auto`` is ``fused`` when
    the model is pe_relu of a fused width (:data:`~inr_fast.model.spec.FUSED_WIDTHS`), the compiled
    extension loads and the device is the CPU, otherwise ``reference`` (warning once when the
    extension did not load). On CUDA ``auto`` stays ``reference`` until the CUDA kernels have passed
    ``make gpu-test`` on a GPU (BENCHMARKS.md, "GPU"); ``--backend fused`` uses them anyway."""
    unsupported = None
    if spec.kind != "pe_relu":
        unsupported = f"the {spec.kind} model has no fused kernel"
    elif spec.width not in FUSED_WIDTHS:
        unsupported = f"width {spec.width} has no fused kernel (widths {', '.join(map(str, FUSED_WIDTHS))})"
    elif device.type != "cpu":
        unsupported = "on CUDA the reference runs until the CUDA kernels have passed make gpu-test on a GPU"
    return _ext.backend_choice(backend, device=device, unsupported=unsupported)


def resolve_backend(backend: str, spec: ModelSpec, device: torch.device) -> str:
    """The concrete backend for ``backend`` (``auto`` resolved as :func:`backend_choice` says)."""
    return backend_choice(backend, spec, device).backend


def get_forward(spec: ModelSpec, backend: str) -> ForwardFn:
    """The model through one interface: ``forward(x (N, 2), weights, biases) -> (B, N, 3)``."""
    if backend == "reference":
        if spec.kind != "pe_relu":
            return lambda x, w, b: spec_forward(spec, x, w, b)
        return _CachedEncodingForward(spec.n_freqs)
    if backend == "fused":
        if spec.kind != "pe_relu":
            raise ConfigError(f"backend 'fused' supports the pe_relu model only, not {spec.kind!r}")
        try:
            ops = _ops()
        except ImportError as err:
            raise InrFastError(
                f"backend 'fused': the fused kernels are not available ({err}); use --backend reference"
            ) from None
        n_freqs = spec.n_freqs
        return lambda x, w, b: ops.pe_mlp(x, w, b, n_freqs)
    raise ConfigError(f"backend must be one of {BACKENDS}, got {backend!r}")


LossGradFn = Callable[
    [torch.Tensor, list[torch.Tensor], list[torch.Tensor], torch.Tensor, torch.Tensor | None],
    tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]],
]


def get_loss_grad(
    spec: ModelSpec, backend: str, device: torch.device, amp_dtype: torch.dtype | None
) -> LossGradFn | None:
    """The fused training step ``(x (N, 2) or (B, N, 2), weights, biases, target (B, N, 3), pixel_weight
    (B, N) or None) -> (loss (B,), grad_weights, grad_biases)`` (loss[b] = mean over pixels and
    channels of w (y - t)^2, gradients of loss.sum()), or None where the trainer keeps forward +
    autograd: other backends, autocast, and CUDA (whose fp16 path needs the per-jet loss scaling of
    the autograd step; the CUDA mse_step kernel is not wired in until it is measured on a GPU)."""
    if backend != "fused" or spec.kind != "pe_relu" or amp_dtype is not None or device.type != "cpu":
        return None
    ops = _ops()
    n_freqs = spec.n_freqs
    return lambda x, w, b, target, pixel_weight=None: ops.mse_step(x, w, b, target, n_freqs, pixel_weight)


class _CachedEncodingForward:
    """The reference PE + MLP (:func:`inr_fast.model.reference.batched_mlp`, same arithmetic), with the
    encoding of the fixed training coordinates computed once instead of every step."""

    def __init__(self, n_freqs: int):
        self.n_freqs = n_freqs
        self._key = None
        self._features = None

    def __call__(
        self, x: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor]
    ) -> torch.Tensor:
        if x.requires_grad or x.dim() == 3:  # per-jet coordinates change every step: no cache
            return batched_mlp(x, weights, biases, self.n_freqs)
        key = (x.data_ptr(), tuple(x.shape), x.dtype, x.device, x._version)
        if key != self._key:
            self._features, self._key = positional_encoding(x, self.n_freqs), key
        return mlp_on_features(self._features, weights, biases)


def check_forward(forward_fn: ForwardFn, spec: ModelSpec, backend: str, device: torch.device) -> None:
    """Run the backend once on a tiny input so that a missing operator is reported before training."""
    w, b = init_spec_params(spec, 1, generator=torch.Generator().manual_seed(0), device=device)
    x = torch.zeros(4, 2, device=device)
    try:
        with torch.no_grad():
            forward_fn(x, w, b)
    except (_ext.ExtensionMissingError, NotImplementedError) as err:
        raise InrFastError(f"backend {backend!r}: {err}") from None
