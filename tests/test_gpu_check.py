"""scripts/gpu_check.py in its CPU mode at tiny sizes: the GPU check uses the runtime's own API, so
an API change must break CI here rather than on the rare GPU machine."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu_check.py"


def test_gpu_check_runs_on_cpu():
    args = ["--allow-cpu", "--tokens", "32", "--stream-tokens", "256", "--scout-tokens", "40"]
    result = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "all checks passed" in result.stdout
    for step in ("1. split attention", "2. tiered cache", "3. Scout-shaped prefill", "4. decode over host",
                 "5. Scout int4, full depth"):
        assert step in result.stdout
