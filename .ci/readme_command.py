"""Print one of the README's two commands exactly as the README prints it.

The README marks each with ``<!-- ci: NAME ... -->`` right above a one-line ```bash block;
``.ci/run`` runs what this prints, so the README and CI cannot drift apart.
"""

from __future__ import annotations

import pathlib
import re
import sys

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"<!-- ci: (\w+)[^>]*-->\n```bash\n(.*?)\n```", re.DOTALL)


def commands(text: str) -> dict[str, str]:
    """The marked commands of a README, by name."""
    found: dict[str, str] = {}
    for name, body in BLOCK.findall(text):
        if name in found or "\n" in body.strip():
            raise SystemExit(f"README: marker {name!r} must appear once, above a one-line block")
        found[name] = body.strip()
    return found


if __name__ == "__main__":
    wanted = sys.argv[1]
    try:
        print(commands(README.read_text())[wanted])
    except KeyError:
        raise SystemExit(f"README has no command marked {wanted!r}") from None
