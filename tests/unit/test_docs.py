"""The guides name the tests that back their claims: every test named there exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from harness.processes import ROOT

NAMED = re.compile(r"`(tests/[\w/]+\.py)::(test_\w+)`")


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    functions = (ast.FunctionDef, ast.AsyncFunctionDef)
    return {n.name for n in tree.body if isinstance(n, functions) and n.name.startswith("test_")}


def test_every_test_a_guide_names_exists():
    guides = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    named = [(guide.name, *m) for guide in guides for m in NAMED.findall(guide.read_text())]
    assert len(named) > 60, "the claim tables are gone"
    missing = [
        f"{guide}: {path}::{test}"
        for guide, path, test in named
        if not (ROOT / path).is_file() or test not in _tests_in(ROOT / path)
    ]
    assert not missing, missing
