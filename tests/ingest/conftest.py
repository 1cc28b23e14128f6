"""Fixtures for ingestion tests: an isolated SCOUTDOC_HOME, the shared corpus, and real git."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"


@pytest.fixture(autouse=True)
def scoutdoc_home(tmp_path, monkeypatch):
    home = tmp_path / "scoutdoc-home"
    monkeypatch.setenv("SCOUTDOC_HOME", str(home))
    return home


@pytest.fixture
def corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.skip(f"shared corpus not found at {CORPUS}")
    return CORPUS


def run_git(repo: Path, *args: str) -> str:
    """Real git with the user's global and system config shut out, so only the repo's rules count."""
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(repo)}
    return subprocess.run(["git", "-c", "core.quotepath=off", *args], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def git() -> callable:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    return run_git
