"""Decoding through stored supports: lossless small masks, decode by hand, sparse = dense, and a fit
whose reconstructions are exactly zero off the support, above the floor on it, uniform on towers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inr_fast.data.stats import DataStats, towers_uniform
from inr_fast.model.support import (
    Decoding,
    decode,
    decode_sparse,
    decode_support,
    encode_support,
    pack_supports,
    tower_means,
    unpack_supports,
    upsample,
)
from inr_fast.train.api import fit
from tests.helpers import TINY


def tower_jets(n: int, seed: int = 0) -> np.ndarray:
    """Sparse jets whose HCAL is uniform on 5 x 5 towers (the detector's granularity)."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 125, 125, 3), np.float32)
    for j in range(n):
        for c in (0, 2):
            r, q = rng.integers(40, 85, 40), rng.integers(40, 85, 40)
            x[j, r, q, c] = rng.exponential(2.0, 40) + 0.2
        t = np.zeros((25, 25), np.float32)
        t[rng.integers(8, 17, 6), rng.integers(8, 17, 6)] = rng.exponential(1.0, 6) + 0.05
        x[j, :, :, 1] = np.kron(t, np.ones((5, 5), np.float32))
    return x


def test_masks_round_trip_losslessly_in_a_few_hundred_bytes():
    x = tower_jets(4)
    masks = x != 0
    for m in masks:
        blob = encode_support(m, towers=True)
        np.testing.assert_array_equal(decode_support(blob, towers=True), m)
        assert len(blob) < 400  # 80 ECAL/track pixels and a few towers: 1-2 bytes each
        np.testing.assert_array_equal(decode_support(encode_support(m, towers=False), towers=False), m)
    blob, offsets = pack_supports(masks, towers=True)
    np.testing.assert_array_equal(unpack_supports(blob, offsets, towers=True), masks)
    assert towers_uniform(x) and not towers_uniform(
        x + np.random.default_rng(1).random(x.shape).astype(np.float32)
    )


def test_decode_by_hand():
    v = torch.zeros(1, 125 * 125, 3, dtype=torch.float64)
    v[0, 0, 1] = 25.0  # one pixel of the first tower: the tower mean is 1
    v[0, 1, 0] = -0.3  # below the ECAL floor
    v[0, 2, 0] = 7.0  # off the support
    mask = torch.zeros(1, 125 * 125, 3, dtype=torch.bool)
    mask[0, [0, 1, 2, 125, 126], 1] = True  # a few pixels of the first tower
    mask[0, 1, 0] = True
    out = decode(v, mask, torch.tensor([0.1, 0.01, 0.5]), towers=True)
    assert out[0, 0, 1] == 1.0 and out[0, 126, 1] == 1.0 and out[0, 3, 1] == 0.0  # not in the mask
    assert out[0, 1, 0] == pytest.approx(0.1)  # the floor
    assert out[0, 2, 0] == 0.0 and out.count_nonzero() == 6
    np.testing.assert_allclose(tower_means(v)[0, :, 1].reshape(125, 125)[:5, :5], np.ones((5, 5)))


def test_sparse_decode_equals_dense_decode_at_the_support():
    rng = np.random.default_rng(3)
    x = tower_jets(2, seed=3)
    mask = torch.from_numpy((x != 0).reshape(2, -1, 3))
    values = torch.from_numpy(rng.normal(0.5, 1.0, (2, 125 * 125, 3)))
    zs = torch.tensor([0.2, 0.05, 0.5])
    dense = decode(values, mask, zs, towers=True)
    on = mask.any(dim=-1)
    m = int(on.sum(dim=1).max())
    idx = torch.argsort((~on).to(torch.int8), dim=1, stable=True)[:, :m]
    valid = torch.arange(m)[None] < on.sum(dim=1, keepdim=True)
    sparse = decode_sparse(
        values.gather(1, idx[..., None].expand(-1, -1, 3)), idx, valid, mask, zs, towers=True
    )
    expected = dense.gather(1, idx[..., None].expand(-1, -1, 3)) * valid[..., None]
    torch.testing.assert_close(sparse, expected, rtol=1e-12, atol=1e-12)


def test_upsample_is_nearest_neighbour():
    m = np.zeros((125, 125, 3), bool)
    m[62, 10, 0] = True
    up = upsample(m, 250)
    assert up.shape == (250, 250, 3) and up[124:126, 20:22, 0].all() and up.sum() == 4


def test_a_support_fit_is_zero_off_it_floored_on_it_uniform_on_towers():
    x = tower_jets(3, seed=5)
    res = fit(x, "fast", device="cpu", support=True, max_steps=40, **TINY)
    stats = DataStats.of(x)
    assert res.decoding == Decoding.from_stats(stats) and res.decoding.towers
    zs = np.array(res.decoding.zs)
    np.testing.assert_allclose(zs, [x[..., c][x[..., c] > 0].min() for c in range(3)])
    r = res.reconstructions
    assert (r[x == 0] == 0).all()  # exactly zero where the original is
    assert (r[x != 0] >= np.broadcast_to(zs, x.shape)[x != 0] - 1e-6).all()  # at least the floor
    np.testing.assert_array_equal((r > 0).sum(axis=(1, 2)), (x > 0).sum(axis=(1, 2)))  # exact counts
    h = r[..., 1].reshape(3, 25, 5, 25, 5)
    assert np.abs(h - h.mean(axis=(2, 4), keepdims=True)).max() < 1e-5  # towers stay towers
    np.testing.assert_allclose(r.sum(axis=(1, 2)), x.sum(axis=(1, 2)), rtol=1e-4)  # totals re-solved
    fine = res.render(0, 250)
    np.testing.assert_allclose(fine.sum(axis=(0, 1)), r[0].sum(axis=(0, 1)), rtol=1e-5)
    assert (fine[~upsample(x[0] != 0, 250)] == 0).all()


@pytest.mark.parametrize("towers", [True, False])
def test_decoding_serialises(towers):
    d = Decoding((0.1, 0.01, 0.5), towers)
    assert (
        Decoding.from_dict(d.to_dict()) == d
        and Decoding.from_stats(DataStats((1.0, 2.0, 3.0), True, towers)).zs is None
    )
