"""The reference models: single vs batched forms, initialisations, SIREN statistics, parameter counts."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from inr_fast.errors import ConfigError
from inr_fast.model.reference import (
    PEMLP,
    BatchedINR,
    Siren,
    batched_mlp,
    batched_siren,
    init_params,
    init_spec_params,
    siren_init_params,
    spec_forward,
)
from inr_fast.model.spec import ModelSpec, bytes_per_jet, param_count

pytestmark = pytest.mark.usefixtures("one_thread")


def _coords(n: int = 97, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return torch.rand(n, 2, generator=g, dtype=dtype) * 2 - 1


def test_single_module_equals_batched_mlp_for_the_same_weights():
    spec = ModelSpec(n_freqs=3, width=8, depth=2)
    weights, biases = init_params(4, 3, 8, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = _coords()
    batched = batched_mlp(x, weights, biases, 3)
    for b in range(4):
        single = PEMLP.from_params(spec, weights, biases, index=b)
        assert single.layers[0].weight.dtype == torch.float64
        torch.testing.assert_close(single(x), batched[b], rtol=1e-12, atol=1e-12)
    module = BatchedINR(spec, weights, biases)
    torch.testing.assert_close(module(x), batched, rtol=0, atol=0)


def test_single_module_by_hand():
    """One jet, depth 1, no frequencies: y = W1 relu(W0 x + b0) + b1, written out."""
    spec = ModelSpec(n_freqs=0, width=3, depth=1)
    w0 = torch.tensor([[[1.0, -2.0], [0.5, 0.5], [-1.0, 0.0]]], dtype=torch.float64)
    b0 = torch.tensor([[0.1, 0.0, 0.2]], dtype=torch.float64)
    w1 = torch.tensor([[[1.0, 2.0, 3.0], [0.0, -1.0, 1.0], [2.0, 0.0, 0.0]]], dtype=torch.float64)
    b1 = torch.tensor([[0.0, 1.0, -1.0]], dtype=torch.float64)
    x = torch.tensor([[0.5, -0.25]], dtype=torch.float64)
    h = [max(0.0, 0.5 + 0.5 + 0.1), max(0.0, 0.25 - 0.125), max(0.0, -0.5 + 0.2)]  # [1.1, 0.125, 0]
    expected = torch.tensor([[h[0] + 2 * h[1], -h[1] + 1.0, 2 * h[0] - 1.0]], dtype=torch.float64)
    torch.testing.assert_close(PEMLP.from_params(spec, [w0, w1], [b0, b1])(x), expected)
    torch.testing.assert_close(spec_forward(spec, x, [w0, w1], [b0, b1])[0], expected)


def test_pemlp_default_init_equals_init_params_with_the_same_seed():
    """nn.Linear's default init from torch.manual_seed(s) == init_params from a generator seeded s."""
    torch.manual_seed(1234)
    module = PEMLP(n_freqs=2, width=5, depth=2)
    weights, biases = init_params(1, 2, 5, 2, generator=torch.Generator().manual_seed(1234))
    for layer, w, b in zip(module.layers, weights, biases, strict=True):
        torch.testing.assert_close(layer.weight.detach(), w[0], rtol=0, atol=1e-7)
        torch.testing.assert_close(layer.bias.detach(), b[0], rtol=0, atol=1e-7)


def test_siren_module_equals_batched_siren():
    spec = ModelSpec(kind="siren", width=6, depth=3, omega0_first=20.0, omega0_hidden=15.0)
    weights, biases = init_spec_params(
        spec, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64
    )
    x = _coords()
    out = batched_siren(x, weights, biases, 20.0, 15.0)
    for b in range(3):
        h = x
        for i in range(3):
            h = torch.sin((20.0 if i == 0 else 15.0) * (h @ weights[i][b].T + biases[i][b]))
        torch.testing.assert_close(out[b], h @ weights[3][b].T + biases[3][b], rtol=1e-12, atol=1e-12)
    siren = Siren(6, 3, 3, 20.0, 15.0, generator=torch.Generator().manual_seed(5)).double()
    w1, b1 = siren_init_params(1, 6, 3, 15.0, generator=torch.Generator().manual_seed(5))
    w1, b1 = [w.double() for w in w1], [b.double() for b in b1]
    torch.testing.assert_close(siren(x), batched_siren(x, w1, b1, 20.0, 15.0)[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(BatchedINR(spec, weights, biases)(x), out, rtol=0, atol=0)


def test_siren_init_follows_the_published_bounds():
    """First layer U(-1/fan_in, 1/fan_in); later layers U(+-sqrt(6/fan_in)/omega0): max |w| within the
    bound and near it, std = bound / sqrt(3); and the paper's result that hidden activations
    sin(omega0 (W h + b)) are arcsine-distributed with std 1/sqrt(2) whatever the depth."""
    width, depth, omega = 256, 3, 30.0
    weights, biases = siren_init_params(1, width, depth, omega, generator=torch.Generator().manual_seed(0))
    for i, w in enumerate(weights):
        fan_in = w.shape[2]
        bound = 1.0 / fan_in if i == 0 else math.sqrt(6.0 / fan_in) / omega
        assert w.abs().max() <= bound
        assert w.abs().max() > 0.99 * bound
        assert abs(w.std().item() - bound / math.sqrt(3)) < 0.03 * bound / math.sqrt(3) + (
            0.1 * bound if i == 0 else 0
        )
        assert biases[i].abs().max() <= 1.0 / math.sqrt(fan_in)
    x = torch.rand(20000, 2, generator=torch.Generator().manual_seed(1)) * 2 - 1
    h = torch.sin(omega * (x @ weights[0][0].T + biases[0][0]))
    for i in range(1, depth):
        h = torch.sin(omega * (h @ weights[i][0].T + biases[i][0]))
        assert abs(h.std().item() - 1 / math.sqrt(2)) < 0.03
        assert abs(h.mean().item()) < 0.05


def test_parameter_counts_by_hand():
    seed_spec = ModelSpec(n_freqs=10, width=256, depth=4)
    expected = (42 * 256 + 256) + 3 * (256 * 256 + 256) + (256 * 3 + 3)
    assert param_count(seed_spec) == expected == 209155
    assert bytes_per_jet(seed_spec) == 4 * expected
    assert bytes_per_jet(seed_spec, torch.float16) == 2 * expected
    assert param_count(ModelSpec(kind="siren", width=8, depth=2)) == (2 * 8 + 8) + (8 * 8 + 8) + (8 * 3 + 3)
    module = PEMLP(10, 256, 4)
    assert sum(p.numel() for p in module.parameters()) == expected
    assert BatchedINR.initialised(seed_spec, 2).param_count() == expected


def test_model_spec_refuses_unknown_keys_and_bad_values():
    assert ModelSpec.from_dict(ModelSpec(width=7).to_dict()) == ModelSpec(width=7)
    with pytest.raises(ConfigError, match="model: unknown key"):
        ModelSpec.from_dict({"width": 8, "widht": 9})
    with pytest.raises(ConfigError, match="kind"):
        ModelSpec(kind="mlp")
    with pytest.raises(ConfigError, match="depth"):
        ModelSpec(depth=0)


def test_batched_module_trains_like_separate_modules():
    """Gradients of the batched module for the summed per-jet losses are the per-jet gradients."""
    spec = ModelSpec(n_freqs=2, width=4, depth=2)
    weights, biases = init_params(2, 2, 4, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x, target = (
        _coords(31),
        torch.randn(2, 31, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(9)),
    )
    module = BatchedINR(spec, [w.clone() for w in weights], [b.clone() for b in biases])
    (module(x) - target).square().mean(dim=(1, 2)).sum().backward()
    for b in range(2):
        single = PEMLP.from_params(spec, weights, biases, index=b)
        nn.functional.mse_loss(single(x), target[b]).backward()
        for layer, w in zip(single.layers, module.weights, strict=True):
            torch.testing.assert_close(layer.weight.grad, w.grad[b], rtol=1e-10, atol=1e-12)
