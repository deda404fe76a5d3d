"""The jet file: reader values and errors, the 139,306-jet memory test, summaries."""

from __future__ import annotations

import json
import re
import time
import tracemalloc

import h5py
import numpy as np
import pytest
import torch

from inr_fast.data.jetfile import JetFile, mean_image, resolve_indices
from inr_fast.errors import ConfigError, DataError
from tests.data.helpers import JET_BYTES, make_images, write_jets


@pytest.fixture(scope="module")
def jets(tmp_path_factory):
    images = make_images(12)
    path = write_jets(tmp_path_factory.mktemp("data") / "jets.h5", images)
    return path, images


# ----------------------------------------------------------------------------------------- reader


def test_round_trip_values(jets, tmp_path):
    path, images = jets
    with JetFile(path) as jf:
        assert len(jf) == jf.n_jets == 12
        got = jf.read(slice(None))
        assert got.dtype == np.float32 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, images)
        np.testing.assert_array_equal(jf.read_one(4), images[4])
        np.testing.assert_array_equal(jf.labels(), np.arange(12) % 2)
        assert jf.labels().dtype == np.int64
        np.testing.assert_allclose(jf.masses([0, -1]), [5.0, 30.0], rtol=1e-6)
        np.testing.assert_allclose(jf.pts([11, 0]), [200.0, 70.0], rtol=1e-6)
    assert jf.closed
    with pytest.raises(DataError, match="closed"):
        jf.read(0)

    cf = write_jets(tmp_path / "cf.h5", images, channels_first=True)
    with JetFile(cf, channels_first=True) as jf:
        np.testing.assert_array_equal(jf.read([7, 2, 7]), images[[7, 2, 7]])
        np.testing.assert_array_equal(jf.read(range(12)), images)
    with h5py.File(cf) as f:  # the file really is channels-first
        np.testing.assert_array_equal(f["X_jets"][3].transpose(1, 2, 0), images[3])


@pytest.mark.parametrize(
    "spec, want",
    [
        (2, [2]),
        (-1, [11]),
        (np.int32(-12), [0]),
        ([5, 1, 5, 0, 11], [5, 1, 5, 0, 11]),
        (np.array([9, 3, 3]), [9, 3, 3]),
        (torch.tensor([10, 2]), [10, 2]),
        (range(1, 9, 3), [1, 4, 7]),
        (slice(None, None, -4), [11, 7, 3]),
        (slice(8, 100), [8, 9, 10, 11]),
        ("0,5,9", [0, 5, 9]),
        ("3:6", [3, 4, 5]),
        ("10:", [10, 11]),
        (" 1, 8:10 ,-1", [1, 8, 9, 11]),
        ([], []),
    ],
)
def test_index_forms(jets, spec, want):
    path, images = jets
    with JetFile(path) as jf:
        got = jf.read(spec)
    assert got.shape == (len(want), 125, 125, 3)
    np.testing.assert_array_equal(got, images[want])


def test_resolve_indices():
    np.testing.assert_array_equal(resolve_indices("10:20", 30), np.arange(10, 20))
    np.testing.assert_array_equal(resolve_indices(None, 4), [0, 1, 2, 3])
    np.testing.assert_array_equal(resolve_indices("::-1", 3), [2, 1, 0])
    np.testing.assert_array_equal(resolve_indices([-3, 2], 3), [0, 2])
    assert resolve_indices("0,5,9", 10).dtype == np.int64
    with pytest.raises(DataError, match=r"jets.h5: selection '10:20': jet index 20 is out of range.*15 jets"):
        resolve_indices("10:20", 15, source="jets.h5")
    with pytest.raises(DataError, match="jet index -4 is out of range: the file has 3 jets"):
        resolve_indices([0, -4], 3)
    for bad in ("a,b", "1,,2", "", "1:2:3:4", "1.5"):
        with pytest.raises(ConfigError, match="jet selection"):
            resolve_indices(bad, 10)
    for bad in ([1.5], np.array([True, False]), True, [[1, 2]]):
        with pytest.raises(ConfigError):
            resolve_indices(bad, 10)


def test_iter_chunks_covers_exactly_the_selection(jets):
    path, images = jets
    sel = [9, 3, 3, 0, 11, 2, 7]
    with JetFile(path) as jf:
        chunks = list(jf.iter_chunks(sel, chunk_size=3))
        assert [len(i) for i, _ in chunks] == [3, 3, 1]
        np.testing.assert_array_equal(np.concatenate([i for i, _ in chunks]), sel)
        np.testing.assert_array_equal(np.concatenate([x for _, x in chunks]), images[sel])
        all_idx = np.concatenate([i for i, _ in jf.iter_chunks(chunk_size=5)])
        np.testing.assert_array_equal(all_idx, np.arange(12))
        with pytest.raises(ConfigError, match="chunk_size"):
            next(jf.iter_chunks(chunk_size=0))


def test_mean_image_streams(jets):
    path, images = jets
    with JetFile(path) as jf:
        got = mean_image(jf, "1:10", chunk_size=4)
    np.testing.assert_allclose(got, images[1:10].astype(np.float64).mean(axis=0), rtol=1e-12, atol=1e-15)


# ----------------------------------------------------------------------------------------- errors


def _bad_file(kind, tmp_path):
    """(path, JetFile kwargs, action or None, regex the message must match)."""
    good = make_images(5, seed=1, negatives=False)
    p = tmp_path / f"{kind}.h5"
    if kind == "missing":
        return tmp_path / "nope.h5", {}, None, "no such file"
    if kind == "not_hdf5":
        p.write_text("ECAL,HCAL,Tracks\n1,2,3\n")
        return p, {}, None, "not an HDF5 file"
    if kind == "missing_key":
        with h5py.File(p, "w") as f:
            f["X_jets"], f["y"], f["pt"] = good, np.zeros(5), np.zeros(5)
        return p, {}, None, "missing dataset 'm0'"
    if kind == "wrong_shape":
        write_jets(p, np.zeros((5, 125, 125, 4), np.float32))
        return p, {}, None, r"X_jets has shape \(5, 125, 125, 4\), expected \(N, 125, 125, 3\)"
    if kind == "channels_first_unasked":
        write_jets(p, good, channels_first=True)
        return p, {}, None, r"shape \(5, 3, 125, 125\).*looks channels-first"
    if kind == "wrong_dtype":
        write_jets(p, good.astype(np.float64))
        return p, {}, None, "X_jets has dtype float64, expected float32"
    if kind in ("nan", "inf"):
        bad = good.copy()
        bad[3, 60, 61, 1] = np.nan if kind == "nan" else -np.inf
        write_jets(p, bad)
        return (
            p,
            {},
            lambda jf: jf.read(slice(None)),
            r"non-finite values in X_jets at jet index 3 \(jet 3 has",
        )
    if kind == "nan_in_chunks":
        bad = good.copy()
        bad[1, 0, 0, 0] = bad[4, 5, 5, 2] = np.nan
        write_jets(p, bad)
        return p, {}, lambda jf: jf.read([4, 0, 1]), "at jet indices 1, 4"
    if kind == "out_of_range":
        write_jets(p, good)
        return p, {}, lambda jf: jf.read([0, 5]), r"jet index 5 is out of range: the file has 5 jets"
    if kind == "negative_out_of_range":
        write_jets(p, good)
        return p, {}, lambda jf: jf.read_one(-6), r"jet index -6 is out of range: the file has 5 jets"
    if kind == "lengths":
        write_jets(p, good, y=np.zeros(4, np.float32))
        return p, {}, None, r"'y' has shape \(4,\) but X_jets holds 5 jets; expected shape \(5,\)"
    if kind == "bad_label":
        write_jets(p, good, y=np.array([0, 1, 0.5, 1, 0], np.float32))
        return p, {}, lambda jf: jf.labels(), r"label 'y' at jet index 2 is"
    raise AssertionError(kind)


BAD_KINDS = [
    "missing",
    "not_hdf5",
    "missing_key",
    "wrong_shape",
    "channels_first_unasked",
    "wrong_dtype",
    "nan",
    "inf",
    "nan_in_chunks",
    "out_of_range",
    "negative_out_of_range",
    "lengths",
    "bad_label",
]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_input_gives_one_clear_error(kind, tmp_path):
    path, kwargs, action, pattern = _bad_file(kind, tmp_path)
    with pytest.raises(DataError) as info:
        with JetFile(path, **kwargs) as jf:
            action(jf)
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert "\n" not in message
    assert re.search(pattern, message), message


def test_check_values_off_reads_nan(tmp_path):
    images = make_images(5, seed=2)
    images[3, 0, 0, 0] = np.nan
    path = write_jets(tmp_path / "nan.h5", images)
    with JetFile(path, check_values=False) as jf:
        assert np.isnan(jf.read(3)[0, 0, 0, 0])
    with JetFile(path) as jf:  # the NaN jet is only refused when read
        np.testing.assert_array_equal(jf.read([0, 4]), images[[0, 4]])


def test_jetfile_pickles(jets):
    import pickle

    path, images = jets
    with JetFile(path) as jf:
        clone = pickle.loads(pickle.dumps(jf))
    with clone:
        np.testing.assert_array_equal(clone.read(5), images[[5]])


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def test_one_jet_of_a_139306_jet_file_does_not_load_the_rest(tmp_path):
    n = 139_306
    assert n * JET_BYTES > 26e9  # what reading everything would take
    path = tmp_path / "big.h5"
    written = {
        0: make_images(1, seed=3)[0],
        70_001: make_images(1, seed=4)[0],
        n - 1: make_images(1, seed=5)[0],
    }
    t0 = time.perf_counter()
    with h5py.File(path, "w") as f:
        ds = f.create_dataset(
            "X_jets", shape=(n, 125, 125, 3), dtype="f4", chunks=(1, 125, 125, 3), compression="gzip"
        )
        for i, image in written.items():
            ds[i] = image
        f["y"] = (np.arange(n) % 2).astype(np.float32)
        f["m0"] = np.full(n, 10.0, np.float32)
        f["pt"] = np.full(n, 100.0, np.float32)
    assert time.perf_counter() - t0 < 10
    assert path.stat().st_size < 5e6

    rss0 = _rss_bytes()
    tracemalloc.start()
    try:
        with JetFile(path) as jf:
            assert jf.n_jets == n
            _, peak_open = tracemalloc.get_traced_memory()
            one = jf.read_one(70_001)
            last = jf.read_one(-1)
            _, peak_one = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            chunk, seen = 64, 0
            for idx, images in jf.iter_chunks(range(69_900, 69_900 + 3 * chunk + 7), chunk_size=chunk):
                assert len(images) <= chunk
                if 70_001 in idx:
                    np.testing.assert_array_equal(images[list(idx).index(70_001)], written[70_001])
                else:
                    assert not images.any()  # unwritten jets read as zeros
                seen += len(idx)
                del images
            _, peak_chunks = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rss1 = _rss_bytes()
    np.testing.assert_array_equal(one, written[70_001])
    np.testing.assert_array_equal(last, written[n - 1])
    assert seen == 3 * chunk + 7
    assert peak_open < 1e6, peak_open  # opening reads no images
    assert peak_one < 1e6, peak_one  # two jets of 190 kB, not 26 GB
    assert peak_chunks < 1.5 * chunk * JET_BYTES + 2e6, peak_chunks  # one chunk at a time
    if rss0 is not None and rss1 is not None:
        assert rss1 - rss0 < 50e6, rss1 - rss0


# ----------------------------------------------------------------------------------------- summary


def test_summary_counts_on_a_hand_made_file(tmp_path):
    x = np.zeros((3, 125, 125, 3), np.float32)
    x[0, 10, 10] = [2.0, 0.0, -0.5]
    x[0, 11, 10] = [-0.25, 3.0, 1.0]
    x[1, 0, 0] = [0.0, -1.0, 0.0]
    x[2, 124, 124] = [4.0, 5.0, 6.0]
    path = write_jets(tmp_path / "hand.h5", x, y=np.array([1, 0, 1], np.float32))
    with JetFile(path) as jf:
        s = jf.summary(chunk_size=2)
        s1 = jf.summary([1])
    pix = 125 * 125
    assert (s.n_jets, s.n_quark, s.n_gluon, s.n_other_label) == (3, 2, 1, 0)
    assert s.channel_n_negative == (1, 1, 1)
    assert s.channel_negative_sum == (-0.25, -1.0, -0.5)
    assert s.n_jets_with_negative == 2
    assert s.channel_sum == (5.75, 7.0, 6.5)
    assert s.channel_min == (-0.25, -1.0, -0.5) and s.channel_max == (4.0, 5.0, 6.0)
    np.testing.assert_allclose(s.channel_mean, np.array([5.75, 7.0, 6.5]) / (3 * pix), rtol=1e-12)
    np.testing.assert_allclose(s.channel_std, x.astype(np.float64).std(axis=(0, 1, 2)), rtol=1e-10)
    np.testing.assert_allclose(s.channel_zero_fraction, 1 - np.array([3, 3, 3]) / (3 * pix), rtol=1e-14)
    np.testing.assert_allclose(s.zero_fraction, 1 - 9 / (9 * pix), rtol=1e-14)
    assert (s1.n_jets, s1.n_quark, s1.n_gluon, s1.channel_n_negative) == (1, 0, 1, (0, 1, 0))
    assert json.loads(json.dumps(s.to_dict()))["channel_n_negative"] == [1, 1, 1]
    assert "ECAL" in s.format() and str(path) in s.format()


def test_indexing_dataset_and_locking(jets):
    import torch

    from inr_fast.data.jetfile import JetDataset

    path, images = jets
    with JetFile(path, locking=False) as jf:
        np.testing.assert_array_equal(jf[3], images[3])
        np.testing.assert_array_equal(jf[2:5], images[2:5])
        np.testing.assert_array_equal(jf[[7, 1]], images[[7, 1]])
    ds = JetDataset(path, indices="2:6")
    assert len(ds) == 4
    image, label = ds[1]
    assert isinstance(image, torch.Tensor) and label == 1  # labels alternate 0, 1, ...
    np.testing.assert_array_equal(image.numpy(), images[3])
    loader = torch.utils.data.DataLoader(ds, batch_size=2)
    batch, labels = next(iter(loader))
    assert batch.shape == (2, 125, 125, 3) and labels.tolist() == [0, 1]
