"""match_channel_sums: exact totals for linear and asinh inverses, against hand-computed shifts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inr_fast.data.normalise import ChannelStandardiser, Compose, IntensityTransform
from inr_fast.train.checks import match_channel_sums


def test_linear_inverse_gets_the_closed_form_shift_in_one_step():
    torch.manual_seed(0)
    y = torch.randn(2, 50, 3)
    norm = ChannelStandardiser([0.1, 0.2, 0.3], [2.0, 3.0, 4.0])
    totals = torch.tensor([[1.0, -2.0, 3.0], [0.0, 5.0, 7.0]], dtype=torch.float64)
    delta = match_channel_sums(y, norm.inverse, totals)
    # sum_n ((y + d) std + mean) = T  =>  d = (T - sum_n (y std + mean)) / (N std)
    std = torch.tensor([2.0, 3.0, 4.0], dtype=torch.float64)
    expected = (totals - norm.inverse(y.double()).sum(dim=1)) / (50 * std)
    torch.testing.assert_close(delta, expected, rtol=1e-10, atol=1e-12)


def test_asinh_inverse_reproduces_totals_and_an_exact_fit_needs_no_shift():
    rng = np.random.default_rng(1)
    x = np.where(rng.random((3, 400, 3)) < 0.05, rng.exponential(5.0, (3, 400, 3)), 0.0).astype(np.float32)
    norm = Compose([IntensityTransform("asinh", 0.05), ChannelStandardiser([0.1, 0.1, 0.1], [0.5, 0.6, 0.7])])
    y = norm.forward(torch.from_numpy(x))
    totals = torch.from_numpy(x).double().sum(dim=1)
    zero = torch.zeros(3, 3, dtype=torch.float64)
    torch.testing.assert_close(match_channel_sums(y, norm.inverse, totals), zero, rtol=0, atol=1e-6)
    noisy = y + 0.05 * torch.randn(y.shape, generator=torch.Generator().manual_seed(2))
    delta = match_channel_sums(noisy, norm.inverse, totals)
    fixed = norm.inverse(noisy.double() + delta.unsqueeze(1)).sum(dim=1)
    torch.testing.assert_close(fixed, totals, rtol=1e-8, atol=1e-8)
    assert not torch.allclose(norm.inverse(noisy.double()).sum(dim=1), totals, rtol=1e-3)


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="totals"):
        match_channel_sums(torch.zeros(2, 5, 3), lambda v: v, torch.zeros(3, 3))
