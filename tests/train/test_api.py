"""fit() end to end: the seed recipe against a plain implementation, every preset, NaN retry, fp16, sum
correction, float16 storage."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

import inr_fast.train.api
import inr_fast.train.loop
from inr_fast.data.normalise import fit_normaliser
from inr_fast.errors import ConfigError, InrFastError
from inr_fast.jobs.fit import FitCommand, fit_run
from inr_fast.train.api import fit
from inr_fast.train.backend import get_forward
from inr_fast.train.config import FAST, FitConfig
from inr_fast.train.loop import jet_seed, train_batch
from tests.helpers import TINY, make_jets

pytestmark = pytest.mark.usefixtures("one_thread")


def _pe(x: torch.Tensor, n_freqs: int) -> torch.Tensor:
    """The seed's encoding written out: [x, sin(2^k pi x), cos(2^k pi x)] per k (float64 arguments)."""
    xd = x.double()
    feats = [xd]
    for k in range(n_freqs):
        feats += [torch.sin(2.0**k * math.pi * xd), torch.cos(2.0**k * math.pi * xd)]
    return torch.cat(feats, dim=1).float()


def _nan_injector(monkeypatch, position: int, calls: set[int]):
    """Make the forward of batch position ``position`` NaN on the given forward calls (1-based)."""
    real = get_forward
    count = {"n": 0}

    def fake(spec, backend):
        fwd = real(spec, backend)

        def wrapped(x, w, b):
            out = fwd(x, w, b)
            count["n"] += 1
            if count["n"] in calls and out.shape[0] > position:
                poison = torch.zeros_like(out)
                poison[position] = math.nan
                out = out + poison
            return out

        return wrapped

    monkeypatch.setattr(inr_fast.train.api, "get_forward", fake)  # what fit_chunk calls
    return count


def test_seed_preset_first_steps_equal_a_plain_implementation_of_the_recipe():
    """nn.Sequential + AdamW + CosineAnnealingLR on one image, global per-channel mean/std, all pixels."""
    image = make_jets(1, seed=3)
    result = fit(image, "seed", device="cpu", seed=7, max_steps=5, indices=[4])

    flat = image.reshape(-1, 3).astype(np.float64)
    mean, std = flat.mean(axis=0), flat.std(axis=0)
    target = torch.from_numpy((flat - mean) / std).float()
    centres = (torch.arange(125, dtype=torch.float64) + 0.5) / 125 * 2 - 1
    rows, cols = torch.meshgrid(centres, centres, indexing="ij")
    coords = torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=1).float()  # float32, as torch holds them
    features = _pe(coords, 10)

    torch.manual_seed(jet_seed(7, 4))
    layers = [nn.Linear(42, 256), nn.ReLU()]
    for _ in range(3):
        layers += [nn.Linear(256, 256), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Linear(256, 3))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=5e-5)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10_000)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(features), target)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())

    np.testing.assert_allclose(result.loss_history[0, :5], losses, rtol=0, atol=1e-5)
    assert losses[4] < losses[0]
    linears = [m for m in model if isinstance(m, nn.Linear)]
    for layer, w in zip(linears, result.weights, strict=True):
        torch.testing.assert_close(w[0], layer.weight.detach(), rtol=0, atol=5e-5)
    with torch.no_grad():
        recon = (model(features).double().numpy() * std + mean).reshape(125, 125, 3)
    np.testing.assert_allclose(result.reconstructions[0], recon, rtol=0, atol=1e-4 * np.abs(image).max())
    assert int(result.n_steps[0]) == 5


def test_a_nan_jet_is_retried_in_float32_and_equals_a_clean_fit(monkeypatch):
    images = make_jets(3, seed=4)
    kw = dict(device="cpu", seed=2, max_steps=12, backend="reference", **TINY)  # every step via forward
    clean = fit(images, "fast", **kw)
    _nan_injector(monkeypatch, position=1, calls={4})  # call 1 is the backend probe
    res = fit(images, "fast", **kw)
    assert res.retried.tolist() == [False, True, False] and not res.failed.any()
    for a, b in zip(clean.weights, res.weights, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.reconstructions, clean.reconstructions, rtol=1e-4, atol=1e-5)
    assert np.isfinite(res.loss_history).all()


def test_a_jet_that_stays_nan_is_marked_failed_and_stored_as_zeros(monkeypatch):
    images = make_jets(1, seed=4)
    _nan_injector(monkeypatch, position=0, calls=set(range(2, 1000)))
    res = fit(images, "fast", device="cpu", seed=2, max_steps=5, backend="reference", **TINY)
    assert res.failed.tolist() == [True] and res.retried.tolist() == [True]
    assert all(float(w.abs().sum()) == 0.0 for w in res.weights + res.biases)
    assert np.isfinite(res.reconstructions).all()
    with pytest.raises(InrFastError, match="failed to fit"):
        res.render(0)


@pytest.mark.parametrize("preset", ["seed", "fast", "compact"])
def test_every_preset_end_to_end(preset):
    images = make_jets(2, seed=6)
    res = fit(images, preset, device="cpu", seed=0, max_steps=3)
    assert res.config.name == preset and len(res) == 2
    from inr_fast._ext import extension_available

    want = "fused" if preset != "seed" and extension_available() else "reference"
    assert res.config.backend == want
    assert np.isfinite(res.loss_history[:, :3]).all()
    assert (res.loss_history[:, 2] < res.loss_history[:, 0]).all()
    np.testing.assert_array_equal(res.reconstructions[1], res.render(1))


def test_siren_model_trains():
    images = make_jets(1, seed=6)
    res = fit(images, "fast", device="cpu", max_steps=15, kind="siren", width=16, depth=2, lr=1e-3)
    assert res.loss_history[0, 14] < res.loss_history[0, 0]


def test_fp16_autocast_with_per_jet_loss_scaling_tracks_float32():
    """The CUDA path (fp16 autocast + per-jet loss scaling) exercised on the CPU, against float32."""
    from inr_fast.data.grid import pixel_grid

    images = torch.from_numpy(make_jets(2, seed=9).reshape(2, -1, 3))
    cfg = replace(
        FAST.with_overrides(max_steps=8, **TINY), empty_samples=None, bright_weight=0.0, support=False
    )
    norm = fit_normaliser(cfg.normalisation, images=images.numpy())
    fwd = get_forward(cfg.model, "reference")
    seeds = [jet_seed(0, 0), jet_seed(0, 1)]
    full = train_batch(images, norm, seeds, cfg, pixel_grid(125), fwd, None)
    half = train_batch(images, norm, seeds, cfg, pixel_grid(125), fwd, torch.float16)
    np.testing.assert_allclose(half.loss_history, full.loss_history, rtol=2e-2)
    for a, b in zip(half.weights, full.weights, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=2e-3)


def test_asinh_standardiser_is_the_composed_normaliser_fitted_on_the_images():
    from inr_fast.data.moments import channel_moments
    from inr_fast.data.normalise import ChannelStandardiser, Compose, IntensityTransform

    images = make_jets(2, seed=3)
    norm = fit_normaliser("asinh_standardiser", images=images, intensity_scale=0.5)
    pre = IntensityTransform("asinh", 0.5)
    assert norm == Compose([pre, ChannelStandardiser.from_moments(channel_moments(images, pre=pre))])
    v = norm.forward(images)
    np.testing.assert_allclose(v.reshape(-1, 3).mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(norm.inverse(v), images, rtol=1e-4, atol=1e-5)


def test_sum_correction_stores_parameters_that_reproduce_the_channel_totals():
    images = make_jets(2, seed=4)
    kw = dict(device="cpu", max_steps=12, check_every=5, target_rel_l2=None, target_level=None, **TINY)
    for normalisation in ("channel_standardiser", "asinh_standardiser"):
        plain = fit(
            images, "fast", normalisation=normalisation, intensity_scale=0.1, sum_correction=False, **kw
        )
        res = fit(images, "fast", normalisation=normalisation, intensity_scale=0.1, sum_correction=True, **kw)
        sums = images.reshape(2, -1, 3).sum(axis=1, dtype=np.float64)
        got = res.reconstructions.reshape(2, -1, 3).sum(axis=1, dtype=np.float64)
        np.testing.assert_allclose(got, sums, rtol=1e-4)
        assert not np.allclose(plain.reconstructions.reshape(2, -1, 3).sum(axis=1), sums, rtol=1e-3)
        # only the output bias moved: the hidden layers are those of the uncorrected fit
        for a, b in zip(res.weights, plain.weights, strict=True):
            torch.testing.assert_close(a, b)
        np.testing.assert_array_equal(res.reconstructions[1], res.render(1))


def test_fast_preset_q2_switches_end_to_end():
    images = make_jets(2, seed=6)
    res = fit(images, FAST, device="cpu", seed=0, max_steps=3, **TINY)
    assert res.config.normalisation == "asinh_standardiser" and res.config.sum_correction
    sums = images.reshape(2, -1, 3).sum(axis=1, dtype=np.float64)
    np.testing.assert_allclose(
        res.reconstructions.reshape(2, -1, 3).sum(axis=1, dtype=np.float64), sums, rtol=1e-4
    )
    np.testing.assert_array_equal(res.reconstructions[1], res.render(1))
    assert FitConfig.from_dict(FAST.to_dict()) == FAST


def test_sampled_training_fused_equals_reference_and_learns():
    images = make_jets(2, seed=5)
    kw = dict(device="cpu", seed=1, max_steps=40, check_every=10, empty_samples=64, target_level=None, **TINY)
    kw["bright_weight"] = 0.0  # the plain MSE: its full-image value is what the checks record
    ref = fit(images, "fast", backend="reference", **kw)
    try:
        fused = fit(images, "fast", backend="fused", **kw)
    except InrFastError as err:  # extension not built here
        assert "fused" in str(err)
        fused = None
    if fused is not None:  # same pixel draws (per-jet generators), same arithmetic to float32 rounding
        np.testing.assert_allclose(fused.loss_history, ref.loss_history, rtol=2e-3, atol=1e-6)
    full_loss = ref.loss_history[:, ::10]  # check steps record the loss over every pixel
    assert (full_loss[:, -1] < 0.5 * full_loss[:, 0]).all()
    # a sampled step touches far fewer pixels than the image: non-empty ones plus >= 64 empty ones
    nonempty = (images.reshape(2, -1, 3) > 0).any(axis=-1).sum(axis=1)
    assert nonempty.max() + 64 < 0.5 * images.shape[1] * images.shape[2]
    with pytest.raises(ConfigError, match="empty_samples"):
        FAST.with_overrides(empty_samples=0)


def test_float16_parameters_are_stored_rounded_with_exact_channel_totals(tmp_path):
    import h5py
    from safetensors import safe_open

    from inr_fast import store
    from inr_fast.model.spec import param_count, stored_bytes_per_jet

    images = make_jets(2, seed=4)
    kw = dict(device="cpu", max_steps=12, check_every=4, target_level=None, target_rel_l2=None, **TINY)
    res = fit(images, "fast", param_dtype="float16", **kw)
    last = len(res.biases) - 1
    for i, t in enumerate(res.weights + res.biases[:last]):
        torch.testing.assert_close(t, t.half().float(), rtol=0, atol=0, msg=f"tensor {i} not float16")
    sums = images.reshape(2, -1, 3).sum(axis=1, dtype=np.float64)
    got = res.reconstructions.reshape(2, -1, 3).sum(axis=1, dtype=np.float64)
    np.testing.assert_allclose(got, sums, rtol=1e-4)  # re-solved on the rounded network
    np.testing.assert_array_equal(res.reconstructions[1], res.render(1))
    spec = res.config.model
    assert stored_bytes_per_jet(spec, "float16") == 2 * (param_count(spec) - 3) + 12
    # a jet stopped by a target keeps the rounded network the check judged, which holds the target
    stop = fit(images, "fast", param_dtype="float16", target_psnr=20.0, **{**kw, "max_steps": 60})
    assert stop.reached_target.all() and (stop.n_steps < 60).all() and (stop.psnr >= 20.0).all()
    for t in stop.weights:
        torch.testing.assert_close(t, t.half().float(), rtol=0, atol=0)
    # the run directory stores exactly those bytes per jet, and loads back the same network
    path = tmp_path / "jets.h5"
    with h5py.File(path, "w") as f:
        f["X_jets"], f["y"], f["m0"], f["pt"] = images, np.array([0, 1]), np.ones(2), np.full(2, 100.0)
    cmd = FitCommand(file=str(path), out=str(tmp_path / "run"), preset="fast", max_steps=12,
                     progress=False, keep_diagnostics=True)  # fmt: skip
    cfg = cmd.fit_config().with_overrides(param_dtype="float16", check_every=4, target_level=None, **TINY)
    monkey = pytest.MonkeyPatch()
    monkey.setattr(FitCommand, "fit_config", lambda self: cfg)
    try:
        fit_run(cmd)
    finally:
        monkey.undo()
    chunk = store.chunk_path(tmp_path / "run", 0)
    with safe_open(str(chunk), "pt") as f:
        stored = {k: f.get_tensor(k) for k in f.keys() if k.startswith(("weights.", "biases."))}
    assert stored[f"biases.{last}"].dtype == torch.float32
    assert all(t.dtype == torch.float16 for k, t in stored.items() if k != f"biases.{last}")
    assert sum(t.nbytes for t in stored.values()) == 2 * stored_bytes_per_jet(spec, "float16")
    loaded = store.load_results(tmp_path / "run")
    np.testing.assert_array_equal(loaded.reconstructions[1], loaded.render(1))
