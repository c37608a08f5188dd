"""Every Python snippet of the README runs as written, in order, on the shipped samples."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), flags=re.S)


def test_readme_python_snippets_run_as_written(tmp_path):
    code = snippets()
    assert len(code) >= 3
    shutil.copytree(ROOT / "samples", tmp_path / "samples")
    script = tmp_path / "readme.py"
    script.write_text("\n".join(code), encoding="utf-8")
    completed = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
