"""The trainer: the seed recipe against a plain implementation, batched == single, early stopping,
NaN retry, the batched AdamW and schedule against torch.optim, configs, every preset end to end."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

import inr_fast.train as train
from inr_fast.errors import ConfigError, InrFastError
from inr_fast.testing import gaussian_jets
from inr_fast.train import (
    COMPACT,
    FAST,
    PRESETS,
    SEED,
    FitConfig,
    adamw_update,
    cosine_lr,
    fit,
    jet_seed,
)

TINY = {"n_freqs": 5, "width": 16, "depth": 2}


pytestmark = pytest.mark.usefixtures("one_thread")


make_jets = gaussian_jets


def _pe(x: torch.Tensor, n_freqs: int) -> torch.Tensor:
    """The seed's encoding written out: [x, sin(2^k pi x), cos(2^k pi x)] per k (float64 arguments)."""
    xd = x.double()
    feats = [xd]
    for k in range(n_freqs):
        feats += [torch.sin(2.0**k * math.pi * xd), torch.cos(2.0**k * math.pi * xd)]
    return torch.cat(feats, dim=1).float()


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


def test_a_jet_trained_in_a_batch_equals_the_jet_trained_alone():
    """Per-jet init from (seed, index), per-jet losses and moments; early stopping lets jets leave at
    different steps. Global normaliser passed explicitly (it depends on the selection by design)."""
    images = make_jets(3, seed=1)
    norm = train.fit_normaliser("channel_standardiser", images=images)
    cfg = SEED.with_overrides(**TINY, lr=1e-2, target_psnr=30.0, check_every=2, max_steps=100)
    together = fit(images, cfg, device="cpu", seed=5, normaliser=norm, indices=[10, 11, 12], batch_size=3)
    assert len(set(together.n_steps.tolist())) > 1, "jets should stop at different steps for this test"
    for j, index in enumerate([10, 11, 12]):
        alone = fit(images[j], cfg, device="cpu", seed=5, normaliser=norm, indices=[index])
        assert alone.n_steps[0] == together.n_steps[j]
        np.testing.assert_allclose(alone.loss_history[0], together.loss_history[j], rtol=1e-5, atol=1e-7)
        for a, b in zip(alone.weights + alone.biases, together.weights + together.biases, strict=True):
            torch.testing.assert_close(a[0], b[j], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            alone.reconstructions[0], together.reconstructions[j], rtol=1e-4, atol=1e-5
        )


def test_early_stopping_keeps_the_parameters_that_met_the_target():
    images = make_jets(2, seed=2)
    res = fit(
        images,
        "fast",
        device="cpu",
        seed=1,
        target_psnr=30.0,
        target_rel_l2=None,
        target_level=None,  # the preset's Q2 stop off: this test is about the psnr target
        normalisation="channel_standardiser",
        sum_correction=False,
        bright_weight=0.0,
        max_steps=200,
        lr=1e-2,
        **TINY,
    )
    for j in range(2):
        assert res.reached_target[j] and res.n_steps[j] < 200
        steps = int(res.n_steps[j])
        assert (
            np.isnan(res.loss_history[j, steps + 1 :]).all()
            and np.isfinite(res.loss_history[j, : steps + 1]).all()
        )
        # the stored reconstruction is the one that met the target, and its psnr is the seed's formula
        x, xhat = images[j].astype(np.float64), res.reconstructions[j].astype(np.float64)
        psnr = 10 * np.log10((x.max() - x.min()) ** 2 / np.mean((xhat - x) ** 2))
        assert psnr == pytest.approx(res.psnr[j], abs=1e-6)
        assert psnr >= 30.0 - 1e-3
        assert res.psnr_history[j, steps] == pytest.approx(psnr, abs=1e-3)
        rel = np.linalg.norm(xhat - x) / np.linalg.norm(x)
        assert rel == pytest.approx(res.rel_l2[j], rel=1e-9)


def test_max_steps_without_target_runs_every_step():
    res = fit(make_jets(1), "fast", device="cpu", target_rel_l2=1e-9, max_steps=7, **TINY)
    assert res.n_steps[0] == 7 and not res.reached_target[0]
    assert np.isfinite(res.loss_history[0]).all()
    assert np.isfinite(res.psnr_history[0, [0, 6]]).all()  # checked at step 0 and the last step


def _nan_injector(monkeypatch, position: int, calls: set[int]):
    """Make the forward of batch position ``position`` NaN on the given forward calls (1-based)."""
    real = train.get_forward
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

    monkeypatch.setattr(train, "get_forward", fake)
    return count


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


def test_batched_adamw_equals_torch_adamw_per_jet_with_a_mask():
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(3, 4, 5, generator=g), torch.randn(3, 4, generator=g)]
    ref = [[p[b].clone().requires_grad_(True) for p in params] for b in range(3)]
    opts = [torch.optim.AdamW(r, lr=0.1, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.3) for r in ref]
    mine = [p.clone() for p in params]
    m = [torch.zeros_like(p) for p in mine]
    v = [torch.zeros_like(p) for p in mine]
    steps = torch.zeros(3, dtype=torch.float64)
    for it in range(6):
        grads = [torch.randn(p.shape, generator=g) for p in params]
        update = torch.tensor([True, it % 2 == 0, it != 3])  # jet 1 skips odd steps, jet 2 skips step 3
        steps += update.double()
        adamw_update(mine, grads, m, v, steps.clamp(min=1), 0.1, (0.8, 0.99), 1e-6, 0.3, update)
        for b in range(3):
            if update[b]:
                for r, gr in zip(ref[b], grads, strict=True):
                    r.grad = gr[b].clone()
                opts[b].step()
    for b in range(3):
        for p, r in zip(mine, ref[b], strict=True):
            torch.testing.assert_close(p[b], r.detach(), rtol=1e-6, atol=1e-7)


def test_cosine_lr_equals_cosine_annealing_lr():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=50, eta_min=0.01)
    for step in range(50):
        assert cosine_lr(step, 0.3, 50, 0.01) == pytest.approx(
            opt.param_groups[0]["lr"], rel=1e-12, abs=1e-15
        )
        opt.step()
        sched.step()
    assert cosine_lr(80, 0.3, 50, 0.01) == pytest.approx(0.01)


def test_jet_seeds_depend_on_seed_and_index_only():
    assert jet_seed(0, 5) == jet_seed(0, 5)
    assert len({jet_seed(s, i) for s in range(4) for i in range(50)}) == 200
    assert 0 <= jet_seed(3, 7) < 2**63


def test_presets_and_config_keys():
    assert PRESETS == {"seed": SEED, "fast": FAST, "compact": COMPACT}
    assert (SEED.lr, SEED.weight_decay, SEED.t_max, SEED.max_steps) == (1e-3, 5e-5, 10_000, 10_000)
    assert (SEED.model.n_freqs, SEED.model.width, SEED.model.depth) == (10, 256, 4)
    assert SEED.normalisation == "channel_standardiser" and not SEED.has_target
    assert "float32" in SEED.__doc__ and "GradScaler" in SEED.__doc__
    assert FitConfig.from_dict(FAST.to_dict()) == FAST
    with pytest.raises(ConfigError, match="unknown fit config key"):
        FitConfig.from_dict({**FAST.to_dict(), "learning_rate": 1})
    with pytest.raises(ConfigError, match="unknown fit option"):
        FAST.with_overrides(learning_rate=1)
    with pytest.raises(ConfigError, match="unknown preset"):
        fit(make_jets(1), "fastest")
    assert FAST.with_overrides(width=16, max_steps=3).model.width == 16
    with pytest.raises(ConfigError, match="fused"):
        SEED.with_overrides(kind="siren", backend="fused")


def test_device_and_amp_resolution():
    assert train.resolve_device("cpu") == torch.device("cpu")
    assert train.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert train.resolve_amp("auto", torch.device("cpu")) is None
    assert train.resolve_amp("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ConfigError, match="CUDA"):
        train.resolve_amp("fp16", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            train.resolve_device("cuda")


def test_auto_backend_is_fused_on_the_cpu_where_the_model_allows_it(monkeypatch):
    import inr_fast._ext as ext

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert FAST.backend == COMPACT.backend == "auto" and SEED.backend == "reference"
    monkeypatch.setattr(ext, "extension_available", lambda: True)
    assert train.resolve_backend("auto", FAST.model, cpu) == "fused"
    assert train.resolve_backend("auto", replace(FAST.model, width=24), cpu) == "reference"  # no fused width
    assert train.resolve_backend("auto", replace(FAST.model, kind="siren"), cpu) == "reference"
    assert train.resolve_backend("auto", FAST.model, cuda) == "reference"  # CUDA kernels: opt-in
    assert train.resolve_backend("reference", FAST.model, cpu) == "reference"
    assert train.resolve_backend("fused", FAST.model, cuda) == "fused"  # explicit choices are kept
    monkeypatch.setattr(ext, "extension_available", lambda: False)
    assert train.resolve_backend("auto", FAST.model, cpu) == "reference"  # not built: still works
    # fit() records the backend it used, never "auto"
    res = fit(make_jets(1, seed=2), "fast", device="cpu", max_steps=2, n_freqs=2, width=16, depth=1)
    assert res.config.backend == "reference"


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


def test_fused_backend_matches_reference_or_says_why():
    images = make_jets(2, seed=8)
    kw = dict(device="cpu", seed=3, max_steps=4, n_freqs=4, width=16, depth=2)
    ref = fit(images, "fast", backend="reference", **kw)
    assert ref.config.backend == "reference"
    try:
        fused = fit(images, "fast", backend="fused", **kw)
    except InrFastError as err:  # the extension is not built here, or lacks the op: a clear message
        assert "fused" in str(err)
        return
    np.testing.assert_allclose(fused.loss_history[:, :4], ref.loss_history[:, :4], rtol=1e-4, atol=1e-6)


def test_loss_scale_follows_grad_scaler_per_jet():
    scale, good = torch.tensor([8.0, 8.0]), torch.tensor([0, 0])
    history = []
    for ok in ([True, False], [True, True], [True, True], [False, True]):
        scale, good = train.loss_scale_update(scale, good, torch.tensor(ok), growth_interval=2)
        history.append(scale.tolist())
    assert history == [[8.0, 4.0], [16.0, 4.0], [16.0, 8.0], [8.0, 8.0]]


def test_fp16_autocast_with_per_jet_loss_scaling_tracks_float32():
    """The CUDA path (fp16 autocast + per-jet loss scaling) exercised on the CPU, against float32."""
    from inr_fast.data import pixel_grid

    images = torch.from_numpy(make_jets(2, seed=9).reshape(2, -1, 3))
    cfg = replace(FAST.with_overrides(max_steps=8, **TINY), empty_samples=None, bright_weight=0.0)
    norm = train.fit_normaliser(cfg.normalisation, images=images.numpy())
    fwd = train.get_forward(cfg.model, "reference")
    seeds = [jet_seed(0, 0), jet_seed(0, 1)]
    full = train.train_batch(images, norm, seeds, cfg, pixel_grid(125), fwd, None)
    half = train.train_batch(images, norm, seeds, cfg, pixel_grid(125), fwd, torch.float16)
    np.testing.assert_allclose(half.loss_history, full.loss_history, rtol=2e-2)
    for a, b in zip(half.weights, full.weights, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=2e-3)


@pytest.mark.parametrize("empty_samples,bright_weight", [(None, 0.0), (40, 0.0), (None, 30.0), (40, 30.0)])
def test_fused_mse_step_path_equals_the_reference_step_by_step(monkeypatch, empty_samples, bright_weight):
    """The fused backend on the CPU in float32 takes loss and gradients from one fused call
    (fused.mse_step) on steps that record no metrics (with pixel sampling: on every step, on the
    sampled pixels); its losses and parameters equal the reference backend's (forward + autograd
    on the same pixels), and the fused step really is the one taken."""
    try:
        from inr_fast import fused
    except ImportError as err:  # pragma: no cover - the extension is not built here
        pytest.skip(f"fused kernels unavailable: {err}")
    images = make_jets(3, seed=10)
    kw = dict(device="cpu", seed=4, max_steps=9, check_every=4, n_freqs=4, width=16, depth=2, lr=1e-2)
    calls = {"n": 0}
    real = fused.mse_step

    def counted(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(fused, "mse_step", counted)
    preset = replace(FAST, empty_samples=empty_samples, bright_weight=bright_weight)
    ref = fit(images, preset, backend="reference", target_rel_l2=None, **kw)
    assert calls["n"] == 0
    fast = fit(images, preset, backend="fused", target_rel_l2=None, **kw)
    # without sampling, steps 0, 4 and 8 (the last) record metrics through the forward path
    assert calls["n"] == (9 - 3 if empty_samples is None else 9)
    np.testing.assert_allclose(fast.loss_history, ref.loss_history, rtol=1e-5, atol=0)
    assert np.isfinite(fast.loss_history).all() and (fast.loss_history[:, 8] < fast.loss_history[:, 0]).all()
    for a, b in zip(fast.weights + fast.biases, ref.weights + ref.biases, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fast.psnr_history, ref.psnr_history, rtol=1e-5)
    assert train.get_loss_grad(FAST.model, "fused", torch.device("cpu"), torch.bfloat16) is None
    assert train.get_loss_grad(FAST.model, "reference", torch.device("cpu"), None) is None
    assert train.get_loss_grad(FAST.model, "fused", torch.device("cuda"), None) is None


def test_monitor_sees_reconstructions_and_can_stop_jets():
    images = make_jets(3, seed=5)
    calls = []

    def monitor(step, ids, recon):
        calls.append((step, ids.tolist()))
        # the monitor gets the reconstructions of this forward pass, on the original scale
        assert recon.shape == (len(ids), 125 * 125, 3)
        seen[tuple(ids.tolist())] = recon.detach().clone()
        return np.isin(ids, [11]) & (step >= 10)  # stop jet id 11 at step 10

    seen = {}
    res = fit(
        images,
        "fast",
        indices=[10, 11, 12],
        max_steps=25,
        check_every=5,
        target_level=None,
        monitor=monitor,
        **TINY,
    )
    assert calls[:3] == [(0, [10, 11, 12]), (5, [10, 11, 12]), (10, [10, 11, 12])]
    assert (15, [10, 12]) in calls  # jet 11 left the batch
    assert res.n_steps.tolist() == [25, 10, 25]
    assert res.reached_target.tolist() == [False, True, False]
    # the stopped jet keeps the parameters of the forward pass the monitor judged
    recon11 = seen[(10, 11, 12)][1].reshape(125, 125, 3).numpy()
    np.testing.assert_allclose(res.reconstructions[1], recon11, rtol=1e-5, atol=1e-5)


def test_asinh_standardiser_is_the_composed_normaliser_fitted_on_the_images():
    from inr_fast.data import ChannelStandardiser, Compose, IntensityTransform, channel_moments

    images = make_jets(2, seed=3)
    norm = train.fit_normaliser("asinh_standardiser", images=images, intensity_scale=0.5)
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


def test_target_level_q2_stops_on_the_physics_predicate(monkeypatch):
    from inr_fast.metrics import quality_levels

    images = make_jets(2, seed=6)
    recon = torch.from_numpy(images.reshape(2, -1, 3)).clone()
    recon[1] *= 1.03  # every total off by 3 %
    got = train.level_met(recon, torch.from_numpy(images.reshape(2, -1, 3)), "Q2")
    np.testing.assert_array_equal(got, quality_levels(recon.reshape(2, 125, 125, 3).numpy(), images)["Q2"])
    assert got.tolist() == [True, False]
    calls = []

    def fake_level(recon, imgs, level, rel=None):  # the predicate holds from the third check on
        calls.append((level, len(recon)))
        return np.full(len(recon), len(calls) >= 3)

    monkeypatch.setattr(train, "level_met", fake_level)
    res = fit(images, "fast", device="cpu", max_steps=30, check_every=5, target_rel_l2=None,
              target_level="Q2", **TINY)  # fmt: skip
    assert calls == [("Q2", 2)] * 3 and res.n_steps.tolist() == [10, 10] and res.reached_target.all()
    with pytest.raises(ConfigError, match="target_level"):
        FAST.with_overrides(target_level="Q9")
    new = ("intensity_scale", "target_level", "sum_correction", "empty_samples", "param_dtype")
    # configs written before these fields existed still load
    assert FitConfig.from_dict({k: v for k, v in SEED.to_dict().items() if k not in new}) == SEED


def test_fast_preset_q2_switches_end_to_end():
    images = make_jets(2, seed=6)
    res = fit(images, train.FAST, device="cpu", seed=0, max_steps=3, **TINY)
    assert res.config.normalisation == "asinh_standardiser" and res.config.sum_correction
    sums = images.reshape(2, -1, 3).sum(axis=1, dtype=np.float64)
    np.testing.assert_allclose(
        res.reconstructions.reshape(2, -1, 3).sum(axis=1, dtype=np.float64), sums, rtol=1e-4
    )
    np.testing.assert_array_equal(res.reconstructions[1], res.render(1))
    assert FitConfig.from_dict(train.FAST.to_dict()) == train.FAST


# ---------------------------------------------------------------------------------------------------
# Pixel sampling (empty_samples) and float16 parameter storage (param_dtype)


def test_pixel_sampler_draws_every_non_empty_pixel_and_an_unbiased_estimate_of_the_full_mean():
    images = torch.from_numpy(make_jets(3, seed=2).reshape(3, -1, 3))
    n_pix = images.shape[1]
    nonempty = (images > 0).any(dim=-1)
    sampler = train.PixelSampler(images, 100, seeds=[1, 2, 3])
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
    alone = train.PixelSampler(images[1:2], 100, seeds=[2]).draw([0])
    batch = train.PixelSampler(images, 100, seeds=[1, 2, 3]).draw([0, 1, 2])
    k1 = int(nonempty[1].sum()) + 100
    assert torch.equal(alone[0][0, :k1], batch[0][1, :k1])


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


def test_fit_command_target_level_none_removes_the_presets_stop():
    def cmd(level):
        return train.FitCommand(file="x.h5", out="run", preset="fast", target_level=level).fit_config()

    assert cmd(None).target_level == "Q2" == FAST.target_level  # the preset's
    assert cmd("Q1").target_level == "Q1"
    assert cmd("none").target_level is None and not cmd("none").has_target
    assert train.FitCommand(file="x.h5", out="run").preset == "fast"  # the default preset


def test_float16_parameters_are_stored_rounded_with_exact_channel_totals(tmp_path):
    import h5py
    from safetensors import safe_open

    from inr_fast import store
    from inr_fast.reference import param_count, stored_bytes_per_jet

    images = make_jets(2, seed=4)
    kw = dict(device="cpu", max_steps=12, check_every=4, target_level=None, **TINY)
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
    cmd = train.FitCommand(file=str(path), out=str(tmp_path / "run"), preset="fast", max_steps=12,
                           progress=False, figures=False)  # fmt: skip
    cfg = cmd.fit_config().with_overrides(param_dtype="float16", check_every=4, target_level=None, **TINY)
    monkey = pytest.MonkeyPatch()
    monkey.setattr(train.FitCommand, "fit_config", lambda self: cfg)
    try:
        train.fit_run(cmd)
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


def test_pixel_emphasis_by_hand_and_in_the_sampled_weights():
    images = torch.zeros(2, 5, 3)
    images[0, 1] = torch.tensor([0.5, 0.5, 0.0])  # E = 1
    images[0, 3] = torch.tensor([1.0, 2.0, 1.0])  # E = 4 (the peak)
    images[0, 4] = torch.tensor([1.0, -2.0, 0.0])  # E = -1: counts as 0
    got = train.pixel_emphasis(images, 10.0)
    want = torch.tensor([[1.0, 1 + 10 * 0.5, 1.0, 11.0, 1.0], [1.0] * 5])  # jet 1 is empty
    torch.testing.assert_close(got, want)
    sampler = train.PixelSampler(images, 3, seeds=[0, 1], emphasis=got)
    idx, w = sampler.draw([0])
    scale = w.shape[1] / 5  # M / N
    assert idx[0, :3].tolist() == [1, 3, 4]  # the non-empty pixels (any channel > 0)
    torch.testing.assert_close(w[0, :3], scale * torch.tensor([6.0, 11.0, 1.0]))
    torch.testing.assert_close(w[0, 3:], torch.full((3,), scale * 2 / 3))  # 2 empty pixels, 3 draws
    with pytest.raises(ConfigError, match="bright_weight"):
        FAST.with_overrides(bright_weight=-1.0)
