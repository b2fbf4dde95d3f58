"""Where the real samples are: `shared/real/` beside the checkout (or beside a
parent of it, for worktrees). Tests using them skip with one line when absent."""
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
_REAL = pathlib.Path("shared", "real")
REAL = next((p / _REAL for p in ROOT.parents if (p / _REAL).is_dir()), ROOT.parent / _REAL)
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason=f"real samples absent ({REAL})")
