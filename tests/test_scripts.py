"""The newcomer's scripts: examples/batch.sh runs without an activated .venv, install.sh says what it builds."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_batch_example_finds_scoutdoc_without_an_activated_venv(tmp_path):
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if Path(p).resolve() != Path(venv_bin).resolve())
    if not (ROOT / ".venv" / "bin" / "scoutdoc").exists():
        import pytest

        pytest.skip("no .venv in the project root")
    env = {**os.environ, "PATH": path, "SCOUTDOC_HOME": str(tmp_path)}
    run = subprocess.run(["bash", str(ROOT / "examples" / "batch.sh"), "--help"], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "--question" in run.stdout


def test_install_script_names_the_long_build_and_is_not_quiet_during_it():
    script = (ROOT / "scripts" / "install.sh").read_text()
    extras_install = next(line for line in script.splitlines() if '".[$extras]"' in line)
    assert " -q" not in extras_install
    before = script[: script.index(extras_install)]
    assert "llama-cpp-python" in before.rsplit("then", 1)[-1] and "say " in before.rsplit("then", 1)[-1]
