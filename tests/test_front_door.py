"""Issue 32.1: the README is a front door (size, research-only statement, own-data section, two-command quick start)."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text()
    assert len(text.split()) <= 1300
    assert "Research use only" in text and "synthetic data only" in text
    assert "## Use it on your own data" in text and "python -m bundle validate" in text
    quick = text.split("## Quick start", 1)[1].split("##", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", quick, re.S)
    assert len(blocks) == 1  # the two commands in one block
    commands = [line for line in blocks[0].splitlines() if line and not line.startswith("#")]
    assert len(commands) == 2 and all(c.startswith("python3 -m venv .venv && . .venv/bin/activate") for c in commands)
    assert commands[1] in (ROOT / ".ci/run").read_text()  # CI runs the README's test command exactly
    for link in re.findall(r"\]\(((?:docs/|CHANGELOG)[^)#]*)", text):
        assert (ROOT / link).exists(), link


def test_changelog_holds_every_version_of_the_metadata():
    changelog = (ROOT / "CHANGELOG.md").read_text()
    metadata = json.loads((ROOT / "metadata.json").read_text())
    for version, entry in metadata["changelog"].items():
        assert f"## {version}\n\n{entry}\n" in changelog, version
    assert metadata["version"] in metadata["changelog"]
