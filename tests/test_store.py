"""Run directories through the command line: write, refuse, resume after a failure, load, render."""

from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest
import torch

import inr_fast.jobs.fit
from inr_fast import store
from inr_fast.cli import main
from inr_fast.commands.render import RenderCommand, render_to_file
from inr_fast.data.grid import pixel_grid
from inr_fast.data.jetfile import JetFile
from inr_fast.errors import ConfigError, DataError, OutputExistsError
from inr_fast.jobs.fit import FitCommand, fit_run
from inr_fast.model.reference import PEMLP
from inr_fast.model.spec import param_count
from inr_fast.testing import gaussian_jets
from inr_fast.train.api import fit_chunk
from inr_fast.train.config import SEED

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
    args = [
        "fit",
        str(jet_file),
        "--out",
        str(run),
        "--preset",
        "fast",
        "--indices",
        "4,1",
        "--keep-diagnostics",
        "--no-support",  # the plain decode, evaluated independently below (support: tests/model)
    ]
    assert main([*args, *TINY]) == 0
    assert sorted(p.name for p in run.iterdir()) == ["compare.png", "config.json", "curve.png", "jets"]
    cfg = store.read_config(run)
    assert cfg.indices.tolist() == [4, 1] and cfg.fit.name == "fast" and cfg.fit.max_steps == 6
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
    names = sorted(p.name for p in (run / "jets").iterdir())  # no temporary leftovers
    assert names == [store.chunk_info_path(run, 0).name, first.name]
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
    for a, b in zip(resumed.weights + resumed.biases, again.weights + again.biases, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    np.testing.assert_array_equal(resumed.loss_history, again.loss_history)
    for c in range(3):  # identical runs write identical chunk files (timings live in the sidecars)
        assert store.chunk_path(run, c).read_bytes() == store.chunk_path(fresh, c).read_bytes()

    calls.clear()
    fit_run(_cmd(jet_file, run))  # finished: nothing is refitted
    assert calls == []


def test_a_different_config_is_refused_unless_overwrite(jet_file, tmp_path):
    run = tmp_path / "run"
    fit_run(_cmd(jet_file, run, n=1))
    with pytest.raises(OutputExistsError, match="different recipe.*max_steps"):
        fit_run(_cmd(jet_file, run, n=1, max_steps=7))
    assert (
        main(["fit", str(jet_file), "--out", str(run), "--preset", "compact", "--n", "1", "--no-figures"])
        == 2
    )
    (run / "notes.txt").write_text("mine")  # a file of the user's inside the run directory
    (run / "jets" / "keep.txt").write_text("mine too")
    fit_run(_cmd(jet_file, run, n=2, max_steps=7, batch_size=2, overwrite=True))
    cfg = store.read_config(run)
    assert cfg.fit.max_steps == 7 and cfg.indices.tolist() == [0, 1]
    assert sorted(p.name for p in (run / "jets").iterdir()) == [
        "chunk_000000.json",
        "chunk_000000.safetensors",
        "keep.txt",
    ]
    assert (run / "notes.txt").read_text() == "mine"  # --overwrite removes only what inr-fast wrote
    assert store.load_results(run).n_steps.tolist() == [7, 7]

    other = tmp_path / "other"
    (other / "jets").mkdir(parents=True)
    (other / "jets" / "photo.png").write_bytes(b"not a chunk")
    (other / "report.html").write_text("my report")
    for overwrite in (False, True):  # a folder that is not a run is never touched, even with --overwrite
        with pytest.raises(OutputExistsError, match="not an inr-fast run directory"):
            fit_run(_cmd(jet_file, other, n=1, overwrite=overwrite))
    assert (other / "jets" / "photo.png").read_bytes() == b"not a chunk"
    assert (other / "report.html").read_text() == "my report"


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
    assert store.RunConfig.from_dict(d) == store.read_config(run)
    assert d["extra"]["param_bytes_per_jet"] == 2 * (d["extra"]["param_count"] - 3) + 12  # compact: float16
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
    extra = store.read_config(run).to_dict()["extra"]
    assert extra["param_bytes_per_jet"] == 2 * (param_count(cfg.model) - 3) + 12
    bad = ["fit", str(jet_file), "--out", str(tmp_path / "bad"), "--preset", "fast", "--empty-samples", "-3"]
    assert main(bad) == 2


# ---------------------------------------------------------------------------------------------- trust


def test_a_default_run_stores_parameters_and_metrics_only(jet_file, tmp_path):
    """No reconstructions, histories thinned to at most 32 check points: bytes on disk per jet are the
    parameters plus a little."""
    run = tmp_path / "run"
    fit_run(_cmd(jet_file, run, n=2, batch_size=2, max_steps=200))
    t, _ = store.read_chunk_tensors(run, 0, store.read_config(run))
    assert "reconstructions" not in t and t["history_steps"].numel() <= store.HISTORY_POINTS
    assert t["history_steps"][0] == 0  # the first check is kept
    params = sum(t[k].numel() * t[k].element_size() for k in t if k.startswith(("weights.", "biases.")))
    chunk = store.chunk_path(run, 0).stat().st_size  # 2 jets: parameters, 32 x 3 history values, scalars
    assert params < chunk < params + 2 * (32 * 3 * 4 + 100) + 2500  # + the safetensors header
    assert store.bytes_on_disk(run) == chunk + (run / "config.json").stat().st_size
    res = store.load_results(run)
    assert res.reconstructions is None and res.loss_history.shape == (2, 200)
    steps = np.flatnonzero(np.isfinite(res.psnr_history[0]))
    np.testing.assert_array_equal(steps, t["history_steps"].numpy()[: len(steps)])


def test_a_run_grows_and_a_changed_recipe_still_refuses(jet_file, tmp_path, monkeypatch):
    run = tmp_path / "run"
    fit_run(_cmd(jet_file, run, n=2, batch_size=2))
    first = store.chunk_path(run, 0).read_bytes()
    calls = []
    real = fit_chunk
    monkeypatch.setattr(
        inr_fast.jobs.fit, "fit_chunk", lambda *a, **k: calls.append([int(i) for i in a[1]]) or real(*a, **k)
    )
    fit_run(_cmd(jet_file, run, n=3, batch_size=2))  # --n 3 after --n 2: one more jet
    assert calls == [[2]]
    cfg = store.read_config(run)
    assert cfg.chunks == ((0, 1), (2,)) and store.chunk_path(run, 0).read_bytes() == first
    assert store.load_results(run).indices.tolist() == [0, 1, 2]
    calls.clear()
    fit_run(_cmd(jet_file, run, n=1, batch_size=2))  # a smaller selection: nothing to do, nothing removed
    assert calls == [] and store.read_config(run).chunks == ((0, 1), (2,))
    with pytest.raises(OutputExistsError, match="different recipe.*seed"):
        fit_run(_cmd(jet_file, run, n=4, batch_size=2, seed=9))


def test_a_moved_data_file_is_found_by_content_and_a_regenerated_one_is_refused(jet_file, tmp_path):
    run = tmp_path / "run"
    fit_run(_cmd(jet_file, run, n=2, batch_size=1))
    moved = tmp_path / "elsewhere" / "jets.h5"
    moved.parent.mkdir()
    jet_file.rename(moved)
    assert main(["evaluate", str(run), "--lpips", "no"]) == 2  # the data is not where it was: --data
    assert main(["evaluate", str(run), "--lpips", "no", "--data", str(moved)]) == 0
    fit_run(_cmd(moved, run, n=3, batch_size=1))  # resumed and grown from the moved file
    assert store.read_config(run).data_path == str(moved.resolve())

    with h5py.File(moved, "r+") as f:  # regenerated at the same path: other jets
        f["X_jets"][1] = f["X_jets"][1] * 1.01
    with pytest.raises(DataError, match="jet 1 is not the jet run .* fitted"):
        fit_run(_cmd(moved, run, n=3, batch_size=1))
    assert main(["evaluate", str(run), "--lpips", "no", "--overwrite"]) == 2
    assert main(["render", str(run), "--index", "1", "--out", str(tmp_path / "j.h5")]) == 2
    assert main(["render", str(run), "--index", "0", "--out", str(tmp_path / "j.h5")]) == 0  # jet 0 is fine


def test_a_flipped_bit_in_a_chunk_is_caught_and_names_the_refit(jet_file, tmp_path):
    run = tmp_path / "run"
    fit_run(_cmd(jet_file, run, n=2, batch_size=1))
    path = store.chunk_path(run, 1)
    data = bytearray(path.read_bytes())
    data[-7] ^= 0x10  # one bit of the last tensor's data
    path.write_bytes(bytes(data))
    with pytest.raises(
        DataError, match=r"chunk_000001.safetensors: fails its checksum.*refit just this chunk"
    ):
        store.load_jet(run, 1)
    store.load_jet(run, 0)  # the other chunk is fine
    assert main(["evaluate", str(run), "--lpips", "no"]) == 2
    path.unlink()  # as the message says: delete it and fit again; only that chunk is refitted
    fit_run(_cmd(jet_file, run, n=2, batch_size=1))
    store.load_jet(run, 1)


def test_a_second_writer_is_refused_while_the_first_holds_the_run(jet_file, tmp_path):
    run = tmp_path / "run"
    fit_run(_cmd(jet_file, run, n=1))
    with store.RunLock(run, "inr-fast fit"):
        with pytest.raises(store.RunBusyError, match=r"in use by `inr-fast fit` \(pid \d+"):
            fit_run(_cmd(jet_file, run, n=1, seed=8, overwrite=True))
        assert main(["evaluate", str(run), "--lpips", "no"]) == 2
    assert store.read_config(run).seed == 0  # the refused writer changed nothing
    assert not (run / store.LOCK_NAME).exists()  # released on exit


def test_a_killed_holder_leaves_no_stale_lock(jet_file, tmp_path):
    import subprocess
    import sys

    run = tmp_path / "run"
    fit_run(_cmd(jet_file, run, n=1))
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import sys, time; from inr_fast import store\n"
         f"with store.RunLock({str(run)!r}, 'holder'):\n    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(store.RunBusyError, match="holder"):
            store.RunLock(run, "second").__enter__()
    finally:
        holder.kill()  # SIGKILL: no clean-up runs
        holder.wait()
        holder.stdout.close()
    with store.RunLock(run, "after"):  # the kernel released the flock
        pass


def test_temporaries_of_a_killed_writer_are_cleaned_and_metrics_pairs_redone(jet_file, tmp_path):
    run = tmp_path / "run"
    fit_run(_cmd(jet_file, run, n=2, batch_size=1))
    stale = run / "jets" / ".chunk_000001.safetensors.abc123.tmp"
    stale.write_bytes(b"half a chunk")
    fit_run(_cmd(jet_file, run, n=2, batch_size=1))
    assert not stale.exists()

    assert main(["evaluate", str(run), "--lpips", "no"]) == 0
    assert main(["evaluate", str(run), "--lpips", "no"]) == 2  # up to date: refused without --overwrite
    (run / "summary.json").unlink()  # killed between the two writes
    assert main(["evaluate", str(run), "--lpips", "no"]) == 0  # redone, no --overwrite needed
    summary = json.loads((run / "summary.json").read_text())
    assert summary["complete"] and summary["n_chunks"] == 2
    fit_run(_cmd(jet_file, run, n=3, batch_size=1))  # the run grows: the pair is out of date
    assert main(["evaluate", str(run), "--lpips", "no"]) == 0
    assert json.loads((run / "summary.json").read_text())["n_jets"] == 3


def test_a_partial_run_says_so(jet_file, tmp_path, monkeypatch):
    run = tmp_path / "run"
    real = fit_chunk
    calls = []

    def failing(images, indices, *args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(images, indices, *args, **kw)

    monkeypatch.setattr(inr_fast.jobs.fit, "fit_chunk", failing)
    with pytest.raises(KeyboardInterrupt):
        fit_run(_cmd(jet_file, run, n=3, batch_size=1))
    assert not (run / store.LOCK_NAME).exists()
    assert main(["report", str(run), "--lpips", "no"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert not summary["complete"] and (summary["n_chunks_fitted"], summary["n_chunks"]) == (1, 3)
    assert any("partial run: 1 of 3 chunks" in n for n in summary["notes"])
    page = (run / "report.html").read_text()
    assert page.index("partial run: 1 of 3 chunks") < page.index("<h2>Summary</h2>")
    assert page.index("<h2>Summary</h2>") < page.index("<h2>Configuration</h2>")  # results first


def test_empty_and_single_pixel_jets(tmp_path):
    """An all-zero jet is not fitted (status empty, 0 steps, rendered as zeros) and the summary stays
    finite; a one-pixel jet reaches Q2 instead of burning every step on a 0 / 0 mass error."""
    images = gaussian_jets(3)
    images[1] = 0.0
    images[2] = 0.0
    images[2, 62, 62, 0] = 25.0
    path = tmp_path / "jets.h5"
    with h5py.File(path, "w") as f:
        f["X_jets"], f["y"], f["m0"], f["pt"] = images, np.array([1, 0, 1]), np.ones(3), np.full(3, 50.0)
    run = tmp_path / "run"
    summary = fit_run(FitCommand(file=str(path), out=str(run), preset="fast", max_steps=400, progress=False))
    assert "1 empty (all-zero jets, not fitted)" in summary and "-inf" not in summary
    res = store.load_results(run)
    assert res.empty.tolist() == [False, True, False] and res.n_steps[1] == 0
    assert res.reached_target[2] and res.n_steps[2] < 400
    np.testing.assert_array_equal(store.load_jet(run, 1).render(250), np.zeros((250, 250, 3), np.float32))
    assert main(["evaluate", str(run), "--lpips", "no"]) == 0
    s = json.loads((run / "summary.json").read_text())
    assert s["n_empty"] == 1 and np.isfinite(s["metrics"]["psnr"]["median"])


def test_bad_input_gets_one_clear_error(jet_file, tmp_path, capsys):
    base = ["fit", str(jet_file), "--n", "1", "--max-steps", "2", "--no-figures", "-q"]
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    assert main([*base, "--out", str(blocker / "run")]) == 2  # the parent is a file
    assert "is not a folder" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "r"), "--target-psnr", "nan"]) == 2
    assert "target_psnr must be a finite" in capsys.readouterr().err
    fit_run(_cmd(jet_file, tmp_path / "run", n=1))
    render = ["render", str(tmp_path / "run"), "--index", "0"]
    assert main([*render, "--device", "tpu", "--out", str(tmp_path / "a.h5")]) == 2
    assert "device must be auto, cpu or cuda" in capsys.readouterr().err
    assert main([*render, "--resolution", "5000", "--out", str(tmp_path / "b.h5")]) == 2
    assert "above the largest render, 1250" in capsys.readouterr().err


def test_big_endian_files_are_read_and_implausible_energies_warned(tmp_path, caplog):
    images = gaussian_jets(2)
    path = tmp_path / "be.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("X_jets", data=images.astype(">f4"))
        f["y"], f["m0"], f["pt"] = np.array([1, 0]), np.ones(2), np.full(2, 50.0)
    with JetFile(path) as jf:
        np.testing.assert_array_equal(jf.read([0, 1]), images)
    images[1] *= 1e6  # MeV-like numbers in a GeV file
    with caplog.at_level("WARNING", logger="inr_fast"):
        fit_chunk(
            images,
            [0, 1],
            SEED.with_overrides(max_steps=1, width=16, depth=1, n_freqs=1, normalisation="per_jet_max"),
            0,
            torch.device("cpu"),
        )
    assert "jet 1: a pixel of" in caplog.text and "jet 0" not in caplog.text


def test_fit_seconds_sums_the_chunk_sidecars_and_says_when_one_is_missing(jet_file, tmp_path):
    """A resumed run's fit time (bench --physics uses it): the sum of the chunks' sidecar seconds."""
    run = tmp_path / "run"
    fit_run(_cmd(jet_file, run, n=2, batch_size=1, max_steps=2))
    for c, sec in ((0, 1.25), (1, 2.5)):  # sidecars written by hand: known seconds
        info = json.loads(store.chunk_info_path(run, c).read_text())
        store.chunk_info_path(run, c).write_text(json.dumps({**info, "seconds": sec}))
    assert store.chunk_seconds(run, 1) == 2.5
    assert store.fit_seconds(run) == 3.75
    store.chunk_info_path(run, 1).unlink()
    assert math.isnan(store.chunk_seconds(run, 1)) and math.isnan(store.fit_seconds(run))
