"""Device, autocast and backend choice; the fused backend against the reference."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from inr_fast import _ext
from inr_fast.errors import ConfigError, InrFastError
from inr_fast.train.api import fit
from inr_fast.train.backend import backend_choice, resolve_amp, resolve_backend, resolve_device
from inr_fast.train.config import COMPACT, FAST, SEED
from tests.helpers import make_jets

pytestmark = pytest.mark.usefixtures("one_thread")


def test_device_and_amp_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_amp("auto", torch.device("cpu")) is None
    assert resolve_amp("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ConfigError, match="CUDA"):
        resolve_amp("fp16", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_auto_backend_is_fused_on_the_cpu_where_the_model_allows_it(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert FAST.backend == COMPACT.backend == "auto" and SEED.backend == "reference"
    if _ext.extension_status().loaded:
        assert resolve_backend("auto", FAST.model, cpu) == "fused"
        assert "compiled CPU" in backend_choice("auto", FAST.model, cpu).reason
    choice = backend_choice("auto", replace(FAST.model, width=24), cpu)
    assert choice.backend == "reference" and "width 24 has no fused kernel" in choice.reason
    assert resolve_backend("auto", replace(FAST.model, kind="siren"), cpu) == "reference"
    assert resolve_backend("auto", FAST.model, cuda) == "reference"  # CUDA kernels: opt-in
    assert resolve_backend("reference", FAST.model, cpu) == "reference"
    assert resolve_backend("fused", FAST.model, cuda) == "fused"  # explicit choices are kept
    monkeypatch.setattr(_ext, "_find_extension", lambda: None)  # not built: still works, and says so
    _ext._reset()
    try:
        with pytest.warns(_ext.ExtensionLoadWarning, match="runs the PyTorch reference"):
            assert resolve_backend("auto", FAST.model, cpu) == "reference"
        # fit() records the backend it used, never "auto"
        res = fit(make_jets(1, seed=2), "fast", device="cpu", max_steps=2, n_freqs=2, width=16, depth=1)
        assert res.config.backend == "reference"
    finally:
        monkeypatch.undo()
        _ext._reset()


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
