"""The checkout itself: no merge-conflict markers left in any tracked text file."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"^(<{7} |={7}$|>{7} )", re.MULTILINE)


def _tracked_text_files() -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    suffixes = {".py", ".md", ".toml", ".sh", ".txt", ".json", ".cfg", ".yml", ".yaml"}
    return [ROOT / name for name in out.splitlines() if Path(name).suffix in suffixes]


def test_no_merge_conflict_markers_in_tracked_files():
    files = _tracked_text_files()
    assert files, "git ls-files listed no text files"
    bad = [
        f"{path.relative_to(ROOT)}:{text[: m.start()].count(chr(10)) + 1}"
        for path in files
        if path.is_file()
        for text in [path.read_text(errors="replace")]
        for m in MARKER.finditer(text)
    ]
    assert not bad, "merge-conflict markers left in: " + ", ".join(bad)
