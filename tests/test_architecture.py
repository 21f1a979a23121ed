"""docs/architecture.md names every module of the package, so the map cannot drift from the code."""

from __future__ import annotations

from pathlib import Path

import relabel

PACKAGE = Path(relabel.__file__).parent
PAGE = PACKAGE.parent / "docs" / "architecture.md"


def test_every_module_has_its_line_in_the_architecture_page():
    page = PAGE.read_text()
    modules = sorted(p.relative_to(PACKAGE.parent).as_posix() for p in PACKAGE.rglob("*.py")
                     if p.name != "__init__.py" or p.parent == PACKAGE)
    missing = [m for m in modules if f"`{m}`" not in page]
    assert not missing, f"docs/architecture.md lacks a line for: {', '.join(missing)}"
    listed = {line.split("`")[1] for line in page.splitlines() if line.startswith("| `relabel/")}
    gone = sorted(m for m in listed if not (PACKAGE.parent / m).is_file())
    assert not gone, f"docs/architecture.md lists modules that no longer exist: {', '.join(gone)}"
