"""Run inside a fresh venv that installed the built wheel: is it what users need?

Checks that ``eventtape`` comes from site-packages (not a checkout), ships ``py.typed``, and
that every module imports whose extra is installed (given as the first argument).
"""

from __future__ import annotations

import importlib
import pathlib
import pkgutil
import sys

# Modules that need an extra, by the extra that brings their driver.
NEEDS = {
    "eventtape.stores.jetstream": "nats",
    "eventtape.cli": "cli",
    "eventtape.sinks.postgres": "postgres",
    "eventtape.testing": "testing",
    "eventtape.console": "console",
    "eventtape.privacy": "crypto",
}


def main() -> None:
    extra = sys.argv[1] if len(sys.argv) > 1 else ""
    import eventtape

    location = pathlib.Path(eventtape.__file__).resolve()
    assert "site-packages" in location.parts, f"eventtape imported from {location}, not the wheel"
    assert (location.parent / "py.typed").exists(), "py.typed is missing from the wheel"
    imported, skipped = [], []
    for module in pkgutil.walk_packages(eventtape.__path__, "eventtape."):
        name = module.name
        need = next((e for prefix, e in NEEDS.items() if name.startswith(prefix)), None)
        if need is not None and need != extra:
            skipped.append(name)
            continue
        if name.endswith("__main__"):
            continue
        importlib.import_module(name)
        imported.append(name)
    for public, needs in NEEDS.items():
        if needs == extra and public.replace(".", "/") in _shipped(location.parent.parent):
            assert public in imported, f"{public} was not imported"
    label = extra or "core"
    print(f"wheel[{label}]: {len(imported)} modules import, {len(skipped)} need other extras")


def _shipped(site: pathlib.Path) -> set[str]:
    """Module paths (``eventtape/stores/jetstream``) present in the installed package."""
    return {
        str(path.relative_to(site).with_suffix("")).removesuffix("/__init__")
        for path in (site / "eventtape").rglob("*.py")
    }


if __name__ == "__main__":
    main()
