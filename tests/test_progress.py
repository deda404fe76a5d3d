"""Progress and messages: plain lines without cursor codes when stderr is not a terminal."""

from __future__ import annotations

import io
import logging

import h5py
import numpy as np

from inr_fast.cli import main
from inr_fast.progress import Progress, configure_logging, log
from inr_fast.testing import gaussian_jets


def test_plain_lines_when_not_a_terminal():
    stream = io.StringIO()
    with Progress(5, "fit", stream=stream, interval=0.0) as bar:
        bar.set_status("jets 0, 1: step 20, 2 training")
        bar.update(2)
        bar.update(3)
    lines = stream.getvalue().splitlines()
    assert lines[-1].startswith("fit: 5 of 5 jets (100 %)")
    assert (
        "step 20, 2 training" in stream.getvalue()
        and "\x1b" not in stream.getvalue()
        and "\r" not in stream.getvalue()
    )
    quiet = io.StringIO()
    with Progress(5, "fit", stream=quiet, enabled=False) as bar:
        bar.update(5)
    assert quiet.getvalue() == ""


def test_a_redirected_fit_writes_a_few_plain_lines(tmp_path, capsys):
    path = tmp_path / "jets.h5"
    with h5py.File(path, "w") as f:
        f["X_jets"], f["y"], f["m0"], f["pt"] = (
            gaussian_jets(4),
            np.array([1, 0, 1, 0]),
            np.ones(4),
            np.ones(4),
        )
    args = ["fit", str(path), "--out", str(tmp_path / "run"), "--max-steps", "30", "--batch-size", "2"]
    assert main([*args, "--no-figures"]) == 0
    err = capsys.readouterr().err  # pytest's capture is not a terminal
    assert "\x1b" not in err and "\r" not in err
    assert err.splitlines()[-1].startswith("fit: 4 of 4 jets (100 %)") and len(err.splitlines()) <= 6
    assert main([*args, "--no-figures", "-q", "--overwrite", "--seed", "3"]) == 0
    assert capsys.readouterr().err == ""  # --quiet: no progress, no information


def test_logging_levels():
    configure_logging(-1)
    assert log.getEffectiveLevel() == logging.WARNING
    configure_logging(1)
    assert log.getEffectiveLevel() == logging.DEBUG
    configure_logging(0)
    assert log.getEffectiveLevel() == logging.INFO
    assert sum(getattr(h, "_inr_fast", False) for h in log.handlers) == 1  # configured once
