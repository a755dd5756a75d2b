"""mypy is clean on the HTTP, task and Serve layers (and what they import), with the
settings of ``[tool.mypy]`` in pyproject.toml. A warm cache (``.mypy_cache``) makes a
rerun take about a second; a cold one reads the dependencies' types first."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ["poly_ray/api", "poly_ray/tasks", "poly_ray/serve"]


def test_mypy_is_clean():
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-color-output", "--no-error-summary", *CHECKED],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, f"mypy {' '.join(CHECKED)}:\n{run.stdout}{run.stderr}"
