"""Hostile-input suite: cases are generated at run time into tmp_path; nothing large lives in the repo."""

import os
from pathlib import Path

import pytest

from .runner import RUNS, env_for, figures_table


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return env_for(tmp_path / "home")


@pytest.fixture(scope="session", autouse=True)
def _figures():
    yield
    if RUNS and os.environ.get("SCOUTDOC_HOSTILE_REPORT"):
        Path(os.environ["SCOUTDOC_HOSTILE_REPORT"]).write_text(figures_table(RUNS), encoding="utf-8")
