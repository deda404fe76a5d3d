"""The fit job: command options into a run directory."""

from __future__ import annotations

import pytest

from inr_fast.jobs.fit import FitCommand
from inr_fast.train.config import FAST

pytestmark = pytest.mark.usefixtures("one_thread")


def test_fit_command_target_level_none_removes_the_presets_stop():
    def cmd(level):
        return FitCommand(file="x.h5", out="run", preset="fast", target_level=level).fit_config()

    assert cmd(None).target_level == "Q2p" == FAST.target_level  # the preset's
    assert cmd(None).target_rel_l2 == 0.005 == FAST.target_rel_l2
    assert cmd("Q1").target_level == "Q1" and cmd("Q1").target_rel_l2 == 0.005
    # none: no stop at all, the preset's rel_l2 target included; one given here stays
    assert cmd("none").target_level is None and not cmd("none").has_target
    given = FitCommand(file="x.h5", out="run", preset="fast", target_level="none", target_rel_l2=0.01)
    assert given.fit_config().target_rel_l2 == 0.01 and given.fit_config().target_level is None
    assert FitCommand(file="x.h5", out="run").preset == "fast"  # the default preset
