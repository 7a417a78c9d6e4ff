"""Fixtures shared by the training tests."""

from __future__ import annotations

import pytest
from test_pipeline import CopyAtSecondEpoch, make_config

from core.kinds import load_config
from core.train.pipeline import Pipeline


@pytest.fixture(scope="session")
def resume_reference(tmp_path_factory):
    """One uninterrupted run of the config of the resume tests (test_pipeline, test_crash): (config mapping,
    summary, a copy of its folder at the start of the second decomposition epoch). Run in this process at its
    default thread count (float reductions depend on it: a subprocess compared with it gets the same count)."""
    root = tmp_path_factory.mktemp("resume_reference")
    raw = make_config(root / "data", n=64, epochs=2, log_every=1)
    copy = root / "at_second_epoch"
    summary = Pipeline(load_config(raw), root / "run", CopyAtSecondEpoch(root / "run", copy)).run(export=False)
    return raw, summary, copy
