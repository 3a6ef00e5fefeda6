"""docs/ARCHITECTURE.md stays true: every module its layout names exists, and every pointer into
it from the code names one of its sections."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "ARCHITECTURE.md"
OLD_DESIGN_PAGE = "DESIGN" ".md"  # the starting design outside the repository (split: not a hit)


def _layout_block() -> list[str]:
    text = DOC.read_text()
    start = text.index("## Where things live")
    block = text[start:].split("```")[1]
    return [line for line in block.splitlines() if line.strip()]


def named_paths() -> list[Path]:
    """The files and folders the layout tree names: the first column of each line (several
    names may share a line, comma-separated), nested by two-space indentation."""
    parents: list[str] = []
    paths = []
    for line in _layout_block():
        indent = (len(line) - len(line.lstrip())) // 2
        names_column = line.strip().split("  ")[0]
        names = [n.strip() for n in names_column.split(",") if n.strip()]
        if not all(re.fullmatch(r"[\w.]+/?", n) for n in names):
            continue  # a continuation line of a description
        if indent > len(parents):
            continue  # deeper than any folder opened so far: a description's second line
        parents = parents[:indent]
        for name in names:
            paths.append(ROOT.joinpath(*parents, name))
        if len(names) == 1 and names[0].endswith("/"):
            parents.append(names[0].rstrip("/"))
    return paths


def test_every_module_the_architecture_names_exists():
    paths = named_paths()
    assert len(paths) > 60, "the layout block was not parsed"
    missing = [str(p.relative_to(ROOT)) for p in paths if not p.exists()]
    assert missing == []


def test_every_package_module_is_named_in_the_architecture():
    named = {p.resolve() for p in named_paths()}
    folders_listed_whole = {ROOT / "imkd_core" / "models", ROOT / "imkd_core" / "distill"}
    unnamed = []
    for package in ("imkd_core", "imkd_ros"):
        for module in sorted((ROOT / package).rglob("*.py")):
            if module.name == "__init__.py" or module.parent in folders_listed_whole:
                continue
            if module.resolve() not in named:
                unnamed.append(str(module.relative_to(ROOT)))
    assert unnamed == []


def test_pointers_into_the_architecture_name_its_sections():
    sections = re.findall(r"^## (.+)$", DOC.read_text(), flags=re.MULTILINE)
    tracked = subprocess.run(["git", "ls-files", "*.py", "*.md", "*.yaml", "Makefile"],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    bad = []
    for rel in tracked:
        path = ROOT / rel
        if not path.is_file() or rel in ("docs/ARCHITECTURE.md", "test/test_architecture.py"):
            continue
        text = path.read_text(errors="replace")
        assert OLD_DESIGN_PAGE not in text, f"{rel} points to a page outside the repository"
        if "ARCHITECTURE.md" not in text:
            continue
        # a pointer may wrap over lines, comment markers included
        flat = re.sub(r"\s+", " ", re.sub(r"\n\s*#\s*", " ", text))
        for match in re.finditer(r"§", flat):
            rest = flat[match.end():]
            if not any(rest.startswith(name) for name in sections):
                bad.append(f"{rel}: §{rest[:30]}")
    assert bad == []
