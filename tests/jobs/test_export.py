"""inr-fast export: every reconstruction in the input layout, readable by JetFile, equal to the renders."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from inr_fast import store
from inr_fast.cli import main
from inr_fast.data.jetfile import JetFile
from inr_fast.jobs.fit import FitCommand, fit_run
from inr_fast.testing import gaussian_jets

pytestmark = pytest.mark.usefixtures("one_thread")


def test_export_writes_the_input_layout(tmp_path):
    images = gaussian_jets(5)
    images[3] = 0.0  # an empty jet: exported as zeros, flagged
    path = tmp_path / "jets.h5"
    with h5py.File(path, "w") as f:
        f["X_jets"], f["y"] = images, np.array([1, 0, 1, 0, 1])
        f["m0"], f["pt"] = np.linspace(10, 50, 5), np.linspace(100, 200, 5)
    run = tmp_path / "run"
    fit_run(
        FitCommand(
            file=str(path), out=str(run), indices="4,3,0,1", max_steps=20, batch_size=3, progress=False
        )
    )
    out = tmp_path / "recon.h5"
    assert main(["export", str(run), "--out", str(out), "-q"]) == 0
    with JetFile(out) as jf:  # the layout any pipeline reading the input reads
        assert jf.n_jets == 4
        np.testing.assert_array_equal(jf.labels(), [1, 0, 1, 0])
        np.testing.assert_allclose(jf.pts(), [200.0, 175.0, 100.0, 125.0])
        for k, index in enumerate([4, 3, 0, 1]):
            np.testing.assert_array_equal(jf[k], store.load_jet(run, index).render())
        assert not jf[1].any()
    with h5py.File(out) as f:
        assert f["index"][()].tolist() == [4, 3, 0, 1] and f["empty"][()].tolist() == [0, 1, 0, 0]
        assert f["X_jets"].chunks == (1, 125, 125, 3) and f["X_jets"].compression == "gzip"
    assert main(["export", str(run), "--out", str(out), "-q"]) == 2  # exists: --overwrite
    fine = tmp_path / "fine.h5"
    assert main(["export", str(run), "--out", str(fine), "--resolution", "250", "-q"]) == 0
    with h5py.File(fine) as f:
        x = f["X_jets"][0]
    assert x.shape == (250, 250, 3)
    np.testing.assert_allclose(
        x.sum(axis=(0, 1)), store.load_jet(run, 4).render().sum(axis=(0, 1)), rtol=1e-4
    )
