"""Normalisers and moments: round trips, hand values, streaming fits, serialisation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from inr_fast.data.jetfile import JetFile
from inr_fast.data.moments import channel_moments, merge_moments
from inr_fast.data.normalise import (
    ChannelStandardiser,
    Compose,
    Identity,
    IntensityTransform,
    PerJetMaxScaler,
    normaliser_from_dict,
)
from inr_fast.errors import ConfigError, DataError
from tests.data.helpers import make_images, write_jets


@pytest.fixture(scope="module")
def jets(tmp_path_factory):
    images = make_images(12)
    path = write_jets(tmp_path_factory.mktemp("data") / "jets.h5", images)
    return path, images


# ----------------------------------------------------------------------------------------- normalisers


def _normalisers(images):
    std = ChannelStandardiser.from_images(images)
    return [
        Identity(),
        std,
        PerJetMaxScaler.fit(images, "jet"),
        PerJetMaxScaler.fit(images, "channel"),
        PerJetMaxScaler.fit(images, "global"),
        IntensityTransform("asinh", 0.5),
        IntensityTransform("log1p", 2.0),
        IntensityTransform("signed_log1p", 0.1),
        Compose([IntensityTransform("asinh", 1.0), ChannelStandardiser((0.1, 0.2, 0.3), (1.5, 2.0, 0.5))]),
    ]


def test_normalisers_round_trip_numpy_and_torch():
    images = make_images(4, seed=6).astype(np.float64)
    for norm in _normalisers(images):
        values = norm.forward(images)
        assert isinstance(values, np.ndarray) and values.dtype == np.float64
        np.testing.assert_allclose(norm.inverse(values), images, rtol=1e-12, atol=1e-13, err_msg=repr(norm))
        t = torch.from_numpy(images).float()
        tv = norm.forward(t)
        assert isinstance(tv, torch.Tensor) and tv.dtype == torch.float32
        torch.testing.assert_close(norm.inverse(tv), t, rtol=1e-5, atol=1e-5, msg=repr(norm))
        flat = images.reshape(4, -1, 3)  # (B, N, 3) works as well as (B, H, W, 3)
        np.testing.assert_allclose(norm.forward(flat), values.reshape(4, -1, 3), rtol=1e-15, atol=1e-15)


def test_normaliser_hand_values():
    x = np.array([[[0.0, 1.0, -0.5]]])  # (1, 1, 3)
    np.testing.assert_allclose(IntensityTransform("asinh", 2.0).forward(x), np.arcsinh(x / 2))
    np.testing.assert_allclose(
        IntensityTransform("log1p", 1.0).forward(np.array([math.e - 1, 0, 1])), [1, 0, np.log(2)]
    )
    np.testing.assert_allclose(
        IntensityTransform("signed_log1p", 1.0).forward(x), [[[0, np.log(2), -np.log(1.5)]]]
    )
    s = ChannelStandardiser((1.0, 2.0, 3.0), (2.0, 4.0, 0.5))
    np.testing.assert_allclose(s.forward(np.array([3.0, 2.0, 2.0])), [1.0, 0.0, -2.0])
    images = np.zeros((2, 2, 2, 3))
    images[0, 0, 0] = [4.0, -8.0, 1.0]
    images[1, 1, 1] = [0.5, 0.25, 0.0]
    np.testing.assert_array_equal(PerJetMaxScaler.fit(images, "jet").scales, [8.0, 0.5])
    np.testing.assert_array_equal(
        PerJetMaxScaler.fit(images, "channel").scales, [[4, 8, 1], [0.5, 0.25, 1.0]]
    )
    assert PerJetMaxScaler.fit(images, "global").scales == 8.0
    np.testing.assert_array_equal(PerJetMaxScaler.fit(images).forward(images)[0, 0, 0], [0.5, -1.0, 0.125])
    sub = PerJetMaxScaler.fit(images, "jet").subset([1])
    np.testing.assert_array_equal(sub.forward(images[1:])[0, 1, 1], [1.0, 0.5, 0.0])
    with pytest.raises(DataError, match=r"fitted on 2 jets"):
        PerJetMaxScaler.fit(images).forward(images[:1])


def test_log1p_refuses_values_below_minus_scale():
    with pytest.raises(DataError, match=r"log1p transform: value -2 <= -scale \(-1\).*asinh"):
        IntensityTransform("log1p", 1.0).forward(np.array([0.0, -2.0, 1.0]))
    np.testing.assert_allclose(IntensityTransform("log1p", 1.0).forward(np.array([-0.5])), [np.log(0.5)])


def test_standardiser_streams_equal_numpy_float64(jets):
    path, images = jets
    sel = [11, 0, 3, 3, 5, 7, 8, 1, 10, 2, 9]  # unsorted, a duplicate; 11 jets
    want = images[sel].astype(np.float64)
    for chunk in (2, 4, 5):  # none divides 11
        with JetFile(path) as jf:
            s = ChannelStandardiser.fit(jf, sel, chunk_size=chunk)
        np.testing.assert_allclose(s.mean, want.mean(axis=(0, 1, 2)), rtol=1e-10, atol=0)
        np.testing.assert_allclose(s.std, want.std(axis=(0, 1, 2)), rtol=1e-10, atol=0)
    asinh = IntensityTransform("asinh", 0.3)
    with JetFile(path) as jf:
        s = ChannelStandardiser.fit(jf, "2:9", chunk_size=3, pre=asinh)
    t = np.arcsinh(images[2:9].astype(np.float64) / 0.3)
    np.testing.assert_allclose(s.mean, t.mean(axis=(0, 1, 2)), rtol=1e-10)
    np.testing.assert_allclose(s.std, t.std(axis=(0, 1, 2)), rtol=1e-10)
    standardised = Compose([asinh, s]).forward(images[2:9].astype(np.float64))
    np.testing.assert_allclose(standardised.mean(axis=(0, 1, 2)), 0.0, atol=1e-10)
    np.testing.assert_allclose(standardised.std(axis=(0, 1, 2)), 1.0, rtol=1e-10)


def test_moments_merge_is_exact_and_stable():
    rng = np.random.default_rng(7)
    a = 1e6 + rng.normal(size=(3, 10, 10, 3))  # a large offset: naive sum-of-squares would lose digits
    b = 1e6 + rng.normal(size=(4, 10, 10, 3))
    m = merge_moments(channel_moments(a, block=2), channel_moments(b, block=3))
    both = np.concatenate([a, b])
    assert m.count == 700
    np.testing.assert_allclose(m.mean, both.mean(axis=(0, 1, 2)), rtol=1e-14)
    np.testing.assert_allclose(np.sqrt(m.m2 / m.count), both.std(axis=(0, 1, 2)), rtol=1e-10)


def test_standardiser_constant_channel_and_empty():
    x = np.zeros((2, 3, 3, 3))
    x[..., 0] = 1.0
    s = ChannelStandardiser.from_images(x)
    assert s.mean == (1.0, 0.0, 0.0) and s.std == (1.0, 1.0, 1.0)
    with pytest.raises(DataError, match="empty selection"):
        ChannelStandardiser.from_images(np.zeros((0, 3)))


def test_to_dict_round_trip_through_json():
    images = make_images(3, seed=8).astype(np.float64)
    for norm in _normalisers(images):
        d = json.loads(json.dumps(norm.to_dict()))
        assert "kind" in d
        again = normaliser_from_dict(d)
        assert type(again) is type(norm) and again == norm
        np.testing.assert_array_equal(again.forward(images), norm.forward(images))


def test_from_dict_refuses_unknown_kinds_and_keys():
    with pytest.raises(ConfigError, match="unknown normaliser kind 'zscore'"):
        normaliser_from_dict({"kind": "zscore"})
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'eps'"):
        normaliser_from_dict({"kind": "channel_standardiser", "mean": [0, 0, 0], "std": [1, 1, 1], "eps": 1})
    with pytest.raises(ConfigError, match=r"missing key\(s\) std"):
        normaliser_from_dict({"kind": "channel_standardiser", "mean": [0, 0, 0]})
    with pytest.raises(ConfigError, match="intensity transform"):
        normaliser_from_dict({"kind": "intensity", "transform": "sqrt"})
    with pytest.raises(ConfigError, match="'kind'"):
        normaliser_from_dict([1, 2])
