"""Every ```python block in the docs runs, in order, page by page: the docs cannot rot."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
BLOCK = re.compile(r"^```python[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)
PAGES = sorted(page for page in DOCS.rglob("*.md") if BLOCK.search(page.read_text()))


def test_there_are_pages_with_code() -> None:
    assert {page.name for page in PAGES} >= {"quickstart.md", "schema-evolution.md"}


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(DOCS)) for p in PAGES])
def test_code_blocks_run(
    page: Path,
    capsys: pytest.CaptureFixture[str],
    nats_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NATS_URL", nats_url)  # the JetStream guide connects to it
    name = "docs_" + re.sub(r"\W", "_", str(page.relative_to(DOCS)))
    module = types.ModuleType(name)
    sys.modules[name] = module  # so pydantic and typing can resolve the page's annotations
    try:
        for number, block in enumerate(BLOCK.findall(page.read_text()), start=1):
            code = compile(block, f"{page.name} block {number}", "exec")
            exec(code, module.__dict__)
    finally:
        del sys.modules[name]


def test_quickstart_prints_who_did_what(
    capsys: pytest.CaptureFixture[str], nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    test_code_blocks_run(DOCS / "quickstart.md", capsys, nats_url, monkeypatch)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:3] for line in lines] == [
        ["1", "OrderPlaced", "user:789"],
        ["2", "OrderCancelled", "admin:support-001"],
    ]
