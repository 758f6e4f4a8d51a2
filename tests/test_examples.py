"""The README's demo command runs and tells the story."""

from __future__ import annotations

import os
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


def test_order_shop_demo_tells_the_story(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "examples.order_shop", "demo"],
        cwd=ROOT,
        env={**os.environ, "ORDER_SHOP_DATA": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    out = result.stdout
    assert "OrderCreated         by user:789" in out
    assert "OrderPaid            by system:fulfillment" in out
    assert "OrderCancelled       by admin:support-001" in out
    assert "Before the cancellation (version 3) it was paid" in out
    assert "Wallet of user:789 after the refund: 50.00." in out
    assert "is cancelled" in out
    assert "403 only an admin may do this" in out
