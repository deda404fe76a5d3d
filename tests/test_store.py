"""Run directories through the command line: write, refuse, resume after a failure, load, render."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

import inr_fast.jobs.fit
from inr_fast import store
from inr_fast.cli import main
from inr_fast.commands.render import RenderCommand, render_to_file
from inr_fast.data.grid import pixel_grid
from inr_fast.errors import ConfigError, DataError, OutputExistsError
from inr_fast.jobs.fit import FitCommand, fit_run
from inr_fast.model.reference import PEMLP
from inr_fast.model.spec import param_count
from inr_fast.testing import gaussian_jets
from inr_fast.train.api import fit_chunk

TINY = ["--max-steps", "6"]


pytestmark = pytest.mark.usefixtures("one_thread")


make_jets = gaussian_jets


@pytest.fixture
def jet_file(tmp_path):
    """A tiny file in the data layout: 5 jets, labels, masses, pTs."""
    path = tmp_path / "jets.h5"
    with h5py.File(path, "w") as f:
        f["X_jets"] = make_jets(5)
        f["y"] = np.array([1, 0, 1, 0, 1])
        f["m0"] = np.linspace(10, 50, 5)
        f["pt"] = np.linspace(100, 200, 5)
    return path


def _cmd(jet_file, run, **kw) -> FitCommand:
    base = dict(
        file=str(jet_file),
        out=str(run),
        preset="compact",
        n=3,
        max_steps=6,
        batch_size=1,
        progress=False,
    )
    return FitCommand(**{**base, **kw})


def test_fit_writes_the_run_directory_and_render_reproduces_it(jet_file, tmp_path):
    run = tmp_path / "run"
    assert main(["fit", str(jet_file), "--out", str(run), "--preset", "fast", "--indices", "4,1", *TINY]) == 0
    assert sorted(p.name for p in run.iterdir()) == ["compare.png", "config.json", "curve.png", "jets"]
    cfg = store.read_config(run)
    assert cfg.indices == [4, 1] and cfg.fit.name == "fast" and cfg.fit.max_steps == 6
    result = store.load_results(run)
    assert result.indices.tolist() == [4, 1] and result.n_steps.tolist() == [6, 6]
    assert np.isfinite(result.loss_history[:, :6]).all()

    # the stored reconstruction is the float32 native render, bit for bit, after a save/load round trip
    jet = store.load_jet(run, 1)
    np.testing.assert_array_equal(jet.render(125), result.reconstructions[1])
    out = tmp_path / "r125.h5"
    assert main(["render", str(run), "--index", "1", "--resolution", "125", "--out", str(out)]) == 0
    with h5py.File(out) as f:
        np.testing.assert_array_equal(f["image"][()], result.reconstructions[1])

    # ... and is the model evaluated independently (single nn.Module, inverse of the run's normaliser)
    module = PEMLP.from_params(cfg.fit.model, jet.weights, jet.biases)
    with torch.no_grad():
        values = module(pixel_grid(125)).double().numpy().reshape(125, 125, 3)
    expected = cfg.normaliser.inverse(values)  # the normalisers' inverses are tested in test_data
    np.testing.assert_allclose(
        result.reconstructions[1], expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max()
    )

    # the psnr stored is the seed's formula on the stored reconstruction
    with h5py.File(jet_file) as f:
        x = f["X_jets"][4].astype(np.float64)
    xhat = result.reconstructions[0].astype(np.float64)
    assert result.psnr[0] == pytest.approx(10 * np.log10((x.max() - x.min()) ** 2 / np.mean((xhat - x) ** 2)))


def test_render_at_higher_resolution_conserves_the_channel_sums(jet_file, tmp_path):
    run = tmp_path / "run"
    fit_run(_cmd(jet_file, run, preset="seed", n=1, max_steps=3))
    jet = store.load_jet(run, 0)
    native = jet.render(125)
    fine = jet.render(250)
    assert fine.shape == (250, 250, 3)
    np.testing.assert_allclose(fine.sum(axis=(0, 1)), native.sum(axis=(0, 1)), rtol=1e-5)
    # without renormalisation: the density at the 250 grid's centres times (125 / 250)^2, evaluated here
    # independently through the single-network module and the run's normaliser
    raw = jet.render(250, conserve=False)
    module = PEMLP.from_params(jet.spec, jet.weights, jet.biases)
    with torch.no_grad():
        values = jet.normaliser.inverse(module(pixel_grid(250)).double()).numpy().reshape(250, 250, 3)
    np.testing.assert_allclose(raw, values / 4, rtol=1e-4, atol=1e-5 * np.abs(values).max())
    out = tmp_path / "r250.h5"
    assert main(["render", str(run), "--index", "0", "--resolution", "250", "--out", str(out)]) == 0
    with h5py.File(out) as f:
        np.testing.assert_array_equal(f["image"][()], fine)
    png = tmp_path / "r.png"
    assert main(["render", str(run), "--index", "0", "--resolution", "60", "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["render", str(run), "--index", "0", "--resolution", "60", "--out", str(png)]) == 2  # exists


def test_resume_after_a_failure_does_not_refit_finished_jets(jet_file, tmp_path, monkeypatch):
    run = tmp_path / "run"
    real = fit_chunk
    calls = []

    def failing(images, indices, *args, **kw):
        calls.append([int(i) for i in indices])
        if len(calls) == 2:
            raise RuntimeError("injected failure")
        return real(images, indices, *args, **kw)

    monkeypatch.setattr(inr_fast.jobs.fit, "fit_chunk", failing)
    with pytest.raises(RuntimeError, match="injected"):
        fit_run(_cmd(jet_file, run))
    first = store.chunk_path(run, 0)
    assert first.is_file() and not store.chunk_path(run, 1).exists()
    assert sorted(p.name for p in (run / "jets").iterdir()) == [first.name]  # no temporary leftovers
    stamp, content = first.stat().st_mtime_ns, first.read_bytes()

    calls.clear()
    monkeypatch.setattr(
        inr_fast.jobs.fit, "fit_chunk", lambda *a, **k: calls.append([int(i) for i in a[1]]) or real(*a, **k)
    )
    fit_run(_cmd(jet_file, run))
    assert calls == [[1], [2]]
    assert first.stat().st_mtime_ns == stamp and first.read_bytes() == content
    resumed = store.load_results(run, allow_partial=False)

    fresh = tmp_path / "fresh"
    fit_run(_cmd(jet_file, fresh))
    again = store.load_results(fresh)
    np.testing.assert_array_equal(resumed.reconstructions, again.reconstructions)
    np.testing.assert_array_equal(resumed.loss_history, again.loss_history)

    calls.clear()
    fit_run(_cmd(jet_file, run))  # finished: nothing is refitted
    assert calls == []


def test_a_different_config_is_refused_unless_overwrite(jet_file, tmp_path):
    run = tmp_path / "run"
    fit_run(_cmd(jet_file, run, n=1))
    with pytest.raises(OutputExistsError, match="different run.*max_steps"):
        fit_run(_cmd(jet_file, run, n=1, max_steps=7))
    assert (
        main(["fit", str(jet_file), "--out", str(run), "--preset", "compact", "--n", "1", "--no-figures"])
        == 2
    )
    fit_run(_cmd(jet_file, run, n=2, max_steps=7, batch_size=2, overwrite=True))
    cfg = store.read_config(run)
    assert cfg.fit.max_steps == 7 and cfg.indices == [0, 1]
    assert [p.name for p in (run / "jets").iterdir()] == ["chunk_000000.safetensors"]
    assert store.load_results(run).n_steps.tolist() == [7, 7]

    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="not an inr-fast run directory"):
        fit_run(_cmd(jet_file, other, n=1))


def test_clear_errors(jet_file, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(DataError, match="no such file"):
        fit_run(_cmd(tmp_path / "missing.h5", run))
    with pytest.raises(DataError, match="out of range"):
        fit_run(_cmd(jet_file, run, n=None, indices="2,9"))
    fit_run(_cmd(jet_file, run, n=1))
    with pytest.raises(DataError, match="not part of this run"):
        store.load_jet(run, 3)
    with pytest.raises(ConfigError, match="unknown output type"):
        render_to_file(RenderCommand(str(run), 0, str(tmp_path / "x.jpg")))
    with pytest.raises(DataError, match="not an inr-fast run directory"):
        store.read_config(tmp_path)
    with pytest.raises(ConfigError, match="resolution"):
        store.load_jet(run, 0).render(0)


def test_config_round_trip_refuses_unknown_keys(jet_file, tmp_path):
    run = tmp_path / "run"
    fit_run(_cmd(jet_file, run, n=1))
    d = store.read_config(run).to_dict()
    assert store.RunConfig.from_dict(d).identity() == store.read_config(run).identity()
    assert d["extra"]["bytes_per_jet"] == 2 * (d["extra"]["param_count"] - 3) + 12  # compact: float16
    with pytest.raises(ConfigError, match="unknown key"):
        store.RunConfig.from_dict({**d, "colour": "red"})


def test_fit_command_line_sets_sampling_weight_and_storage(jet_file, tmp_path):
    run = tmp_path / "run"
    args = ["fit", str(jet_file), "--out", str(run), "--preset", "fast", "--n", "1", "--quiet",
            "--no-figures", "--empty-samples", "0", "--bright-weight", "7", "--param-dtype", "float16",
            *TINY]  # fmt: skip
    assert main(args) == 0
    cfg = store.read_config(run).fit
    assert (cfg.empty_samples, cfg.bright_weight, cfg.param_dtype) == (None, 7.0, "float16")
    assert store.read_config(run).to_dict()["extra"]["bytes_per_jet"] == 2 * (param_count(cfg.model) - 3) + 12
    bad = ["fit", str(jet_file), "--out", str(tmp_path / "bad"), "--preset", "fast", "--empty-samples", "-3"]
    assert main(bad) == 2
