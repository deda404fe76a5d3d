"""The model layer: what a jet's network is (:mod:`~inr_fast.model.spec`), the positional encoding and
the pure-PyTorch reference model that defines what is correct (:mod:`~inr_fast.model.encoding`,
:mod:`~inr_fast.model.reference`), and rendering fitted jets at any resolution
(:mod:`~inr_fast.model.render`). The compiled kernels are :mod:`inr_fast.ops`."""

from inr_fast.model.reference import PEMLP, BatchedINR, batched_mlp, init_params
from inr_fast.model.render import render_jet
from inr_fast.model.spec import ModelSpec, param_count, stored_bytes_per_jet

__all__ = [
    "PEMLP",
    "BatchedINR",
    "ModelSpec",
    "batched_mlp",
    "init_params",
    "param_count",
    "render_jet",
    "stored_bytes_per_jet",
]
