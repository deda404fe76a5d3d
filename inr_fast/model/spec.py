"""What a jet's network is: :class:`ModelSpec` (kind, encoding frequencies, width, depth), its layer
shapes, parameter count and stored bytes.

Parameter layout shared by every backend, for B jets, depth D (hidden layers) and width W:
``weights[l]`` has shape (B, fan_out_l, fan_in_l) and ``biases[l]`` shape (B, fan_out_l), for the
D + 1 linear layers (F -> W, D - 1 times W -> W, W -> 3), F = 2 + 4 L encoded features.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from inr_fast.errors import ConfigError
from inr_fast.model.encoding import n_features
from inr_fast.util import refuse_unknown

PARAM_DTYPES = ("float32", "float16")
#: widths the fused kernels (:mod:`inr_fast.ops`) support; pe_relu models of other widths run on the
#: reference backend.
FUSED_WIDTHS = (16, 32, 64, 128)


def layer_shapes(n_freqs: int, width: int, depth: int, out_features: int = 3) -> list[tuple[int, int]]:
    """(fan_out, fan_in) of each of the ``depth + 1`` linear layers."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    dims = [n_features(n_freqs)] + [width] * depth + [out_features]
    return [(dims[i + 1], dims[i]) for i in range(depth + 1)]


MODEL_KINDS = ("pe_relu", "siren")


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild one jet's network from its parameters.

    kind: ``"pe_relu"`` (positional encoding with ``n_freqs`` frequencies + ReLU MLP, the seed's model)
    or ``"siren"`` (raw coordinates, sine activations sin(omega0 (W h + b)), Sitzmann et al. 2020).
    ``depth`` hidden layers of ``width`` units, a linear output of ``out_features`` channels.
    ``n_freqs`` is ignored by SIREN; ``omega0_first`` / ``omega0_hidden`` are ignored by pe_relu.
    """

    kind: str = "pe_relu"
    n_freqs: int = 10
    width: int = 256
    depth: int = 4
    out_features: int = 3
    omega0_first: float = 30.0
    omega0_hidden: float = 30.0

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ConfigError(f"model kind must be one of {MODEL_KINDS}, got {self.kind!r}")
        for name in ("width", "depth", "out_features"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"model {name} must be >= 1, got {getattr(self, name)}")
        if self.n_freqs < 0:
            raise ConfigError(f"model n_freqs must be >= 0, got {self.n_freqs}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelSpec:
        refuse_unknown(cls, d, "model")
        return cls(**d)


def spec_layer_shapes(spec: ModelSpec) -> list[tuple[int, int]]:
    """(fan_out, fan_in) of each linear layer of ``spec``'s network."""
    if spec.kind == "siren":
        dims = [2] + [spec.width] * spec.depth + [spec.out_features]
        return [(dims[i + 1], dims[i]) for i in range(spec.depth + 1)]
    return layer_shapes(spec.n_freqs, spec.width, spec.depth, spec.out_features)


def param_count(spec: ModelSpec) -> int:
    """Number of scalar parameters of one jet's network (weights and biases)."""
    return sum(fo * fi + fo for fo, fi in spec_layer_shapes(spec))


def bytes_per_jet(spec: ModelSpec, dtype: torch.dtype = torch.float32) -> int:
    """Bytes needed to store one jet's parameters in ``dtype`` (4 per scalar for float32)."""
    return param_count(spec) * torch.empty((), dtype=dtype).element_size()


def stored_bytes_per_jet(spec: ModelSpec, param_dtype: str = "float32") -> int:
    """Bytes of one jet's parameters as a run stores them: every scalar in float32, or (``float16``)
    every scalar in float16 except the 3 output biases, kept in float32 because they carry the
    channel-sum correction (a float16 rounding of them shifts every pixel, hence the totals)."""
    if param_dtype == "float32":
        return bytes_per_jet(spec)
    if param_dtype == "float16":
        return 2 * (param_count(spec) - 3) + 4 * 3
    raise ValueError(f"param_dtype must be one of {PARAM_DTYPES}, got {param_dtype!r}")
