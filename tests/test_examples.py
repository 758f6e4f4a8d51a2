"""The README's demo command runs and tells the story."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_core_demo_answers_who_cancelled_the_order() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "core_demo.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    out = result.stdout
    assert "OrderCancelled  by admin:support-001" in out
    assert "OrderPlaced     by user:789" in out
    assert "Before the cancellation (version 2) it was paid" in out
    assert "expected version 1, actual version 2" in out
