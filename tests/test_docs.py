"""The docs run as written: every code block marked ``runnable`` in README.md and docs/*.md
(```` ```bash runnable ```` or ```` ```python runnable ````; ``slow`` marks the long ones) runs in a
fresh folder, the blocks of one page in order, and must exit 0."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```(bash|python) runnable( slow)?\n(.*?)^```", flags=re.S | re.M)


def blocks(page: Path) -> list[tuple[str, bool, str]]:
    return [(lang, bool(slow), body) for lang, slow, body in BLOCK.findall(page.read_text())]


PARAMS = []
for page in PAGES:
    found = blocks(page)
    if found:
        slow = any(s for _, s, _ in found)
        PARAMS.append(pytest.param(page, marks=[pytest.mark.slow] if slow else [], id=page.name))


def test_some_blocks_are_marked_runnable():
    assert len(PARAMS) >= 2 and sum(len(blocks(p)) for p in PAGES) >= 4


@pytest.mark.parametrize("page", PARAMS)
def test_runnable_blocks_run(page, tmp_path):
    bindir = Path(sys.executable).parent  # the `ctrlshift` script of this environment
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}", "HF_HUB_OFFLINE": "1"}
    for k, (lang, _, body) in enumerate(blocks(page)):
        cmd = ["bash", "-euo", "pipefail", "-c", body] if lang == "bash" else [sys.executable, "-c", body]
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"{page.name} block {k}:\n{body}\n{proc.stderr[-3000:]}"
