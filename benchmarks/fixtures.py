"""Where the benchmarks find the real modules and photos: ../shared/fixtures beside the clone, or the folder
RETRAIN_FIXTURES names (as for the tests)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("RETRAIN_FIXTURES", ROOT.parent / "shared" / "fixtures"))


def require_fixtures() -> Path:
    """FIXTURES, or an exit with one line saying where they were looked for."""
    if not (FIXTURES / "flower_photos").is_dir() or not (FIXTURES / "modules").is_dir():
        sys.exit(f"benchmark fixtures not found at {FIXTURES}: put ../shared beside the clone or set "
                 "RETRAIN_FIXTURES to the fixtures folder")
    return FIXTURES
