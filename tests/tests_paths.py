"""Where tests leave what a person may want to look at afterwards (screenshots)."""

import os
from pathlib import Path

ARTIFACTS = Path(os.environ.get("POLY_TEST_ARTIFACTS") or Path(__file__).resolve().parent.parent / "test-artifacts")
