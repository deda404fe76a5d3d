"""Fit configurations and presets: values, derivation, unknown keys."""

from __future__ import annotations

import pytest

from inr_fast.errors import ConfigError
from inr_fast.train.api import fit
from inr_fast.train.config import COMPACT, FAST, PRESETS, SEED, FitConfig
from tests.helpers import make_jets

pytestmark = pytest.mark.usefixtures("one_thread")


def test_presets_and_config_keys():
    assert PRESETS == {"seed": SEED, "fast": FAST, "compact": COMPACT}
    assert (SEED.lr, SEED.weight_decay, SEED.t_max, SEED.max_steps) == (1e-3, 5e-5, 10_000, 10_000)
    assert (SEED.model.n_freqs, SEED.model.width, SEED.model.depth) == (10, 256, 4)
    assert SEED.normalisation == "channel_standardiser" and not SEED.has_target
    assert "float32" in SEED.__doc__ and "GradScaler" in SEED.__doc__
    assert FitConfig.from_dict(FAST.to_dict()) == FAST
    with pytest.raises(ConfigError, match="fit config: unknown key"):
        FitConfig.from_dict({**FAST.to_dict(), "learning_rate": 1})
    with pytest.raises(ConfigError, match="unknown fit option"):
        FAST.with_overrides(learning_rate=1)
    with pytest.raises(ConfigError, match="unknown preset"):
        fit(make_jets(1), "fastest")
    assert FAST.with_overrides(width=16, max_steps=3).model.width == 16
    with pytest.raises(ConfigError, match="fused"):
        SEED.with_overrides(kind="siren", backend="fused")
