"""Pixel sampling and bright-pixel emphasis: hand values and unbiasedness."""

from __future__ import annotations

import pytest
import torch

from inr_fast.errors import ConfigError
from inr_fast.train.config import FAST
from inr_fast.train.sampling import PixelSampler, pixel_emphasis
from tests.helpers import make_jets

pytestmark = pytest.mark.usefixtures("one_thread")


def test_pixel_sampler_draws_every_non_empty_pixel_and_an_unbiased_estimate_of_the_full_mean():
    images = torch.from_numpy(make_jets(3, seed=2).reshape(3, -1, 3))
    n_pix = images.shape[1]
    nonempty = (images > 0).any(dim=-1)
    sampler = PixelSampler(images, 100, seeds=[1, 2, 3])
    err = torch.rand(3, n_pix, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    full = err.mean(dim=1)
    estimates = []
    for _ in range(400):
        idx, w = sampler.draw([0, 2])
        m = int(nonempty[[0, 2]].sum(dim=1).max()) + 100
        assert idx.shape == w.shape == (2, m)
        for row, jet in enumerate((0, 2)):
            k = int(nonempty[jet].sum())
            # the jet's non-empty pixels, each once, weight M / N; then empty pixels only
            assert idx[row, :k].tolist() == torch.nonzero(nonempty[jet]).flatten().tolist()
            torch.testing.assert_close(w[row, :k], torch.full((k,), m / n_pix))
            assert not nonempty[jet, idx[row, k : k + 100]].any()
            want = torch.full((100,), m / n_pix * (n_pix - k) / 100, dtype=torch.float64)
            torch.testing.assert_close(w[row, k : k + 100].double(), want)
            assert (w[row, k + 100 :] == 0).all()  # padding up to the batch's common M
        estimates.append((w.double() * err[[0, 2]].gather(1, idx)).sum(dim=1) / m)
    mean = torch.stack(estimates).mean(dim=0)
    torch.testing.assert_close(mean, full[[0, 2]], rtol=5e-3, atol=0)  # 400 draws of ~15k empty pixels
    # a jet draws the same pixels whatever the batch (its own generator, k draws per step)
    alone = PixelSampler(images[1:2], 100, seeds=[2]).draw([0])
    batch = PixelSampler(images, 100, seeds=[1, 2, 3]).draw([0, 1, 2])
    k1 = int(nonempty[1].sum()) + 100
    assert torch.equal(alone[0][0, :k1], batch[0][1, :k1])


def test_pixel_emphasis_by_hand_and_in_the_sampled_weights():
    images = torch.zeros(2, 5, 3)
    images[0, 1] = torch.tensor([0.5, 0.5, 0.0])  # E = 1
    images[0, 3] = torch.tensor([1.0, 2.0, 1.0])  # E = 4 (the peak)
    images[0, 4] = torch.tensor([1.0, -2.0, 0.0])  # E = -1: counts as 0
    got = pixel_emphasis(images, 10.0)
    want = torch.tensor([[1.0, 1 + 10 * 0.5, 1.0, 11.0, 1.0], [1.0] * 5])  # jet 1 is empty
    torch.testing.assert_close(got, want)
    sampler = PixelSampler(images, 3, seeds=[0, 1], emphasis=got)
    idx, w = sampler.draw([0])
    scale = w.shape[1] / 5  # M / N
    assert idx[0, :3].tolist() == [1, 3, 4]  # the non-empty pixels (any channel > 0)
    torch.testing.assert_close(w[0, :3], scale * torch.tensor([6.0, 11.0, 1.0]))
    torch.testing.assert_close(w[0, 3:], torch.full((3,), scale * 2 / 3))  # 2 empty pixels, 3 draws
    with pytest.raises(ConfigError, match="bright_weight"):
        FAST.with_overrides(bright_weight=-1.0)
