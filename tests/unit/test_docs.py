"""The design notes' anchors: every ``science.md#...`` a docstring, notebook or note cites exists.

Docstrings point at ``docs/science.md#section``; a renamed or merged section leaves the
pointer dangling without any other test noticing. Anchors are GitHub's heading slugs.
"""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers import ROOT

DOCS = ROOT / "docs"
NOTES = ("science", "design", "dependencies")
# ``docs/science.md#roles``, ``science.md#roles``, ``(dependencies.md#where-...)``.
CITATION = re.compile(r"\b(" + "|".join(NOTES) + r")\.md#([A-Za-z0-9_-]+)")
LOCAL_LINK = re.compile(r"\]\(#([A-Za-z0-9_-]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every heading's anchor, repeats numbered ``-1``, ``-2`` as GitHub does."""
    seen: Counter[str] = Counter()
    out = set()
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        match = None if in_code else re.match(r"#{1,6} (.+)", line)
        if match:
            base = slug(match.group(1))
            out.add(base if seen[base] == 0 else f"{base}-{seen[base]}")
            seen[base] += 1
    return out


def cited_files() -> list[Path]:
    """Tracked and untracked-unignored source, notebooks and notes."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    paths = [ROOT / name for name in listed if name.endswith((".py", ".ipynb", ".md"))]
    # This file's own examples are not citations.
    return [p for p in paths if p.is_file() and p != Path(__file__).resolve()]


def test_slugs_follow_github() -> None:
    assert slug("Organism: beliefs variant") == "organism-beliefs-variant"
    assert slug("Ablation vs interchange") == "ablation-vs-interchange"
    assert slug("Dose-response") == "dose-response"
    assert anchors("# A\n## Roles\n```\n# not a heading\n```\n## Roles\n") == {
        "a",
        "roles",
        "roles-1",
    }


def test_every_cited_anchor_exists() -> None:
    known = {note: anchors((DOCS / f"{note}.md").read_text(encoding="utf-8")) for note in NOTES}
    missing = []
    for path in cited_files():
        text = path.read_text(encoding="utf-8")
        for match in CITATION.finditer(text):
            note, anchor = match.groups()
            if anchor not in known[note]:
                line = text.count("\n", 0, match.start()) + 1
                missing.append(f"{path.relative_to(ROOT)}:{line}: {note}.md#{anchor}")
    assert missing == [], "cited sections that do not exist:\n" + "\n".join(missing)


@pytest.mark.parametrize("note", NOTES)
def test_links_within_a_note_exist(note: str) -> None:
    text = (DOCS / f"{note}.md").read_text(encoding="utf-8")
    missing = sorted(set(LOCAL_LINK.findall(text)) - anchors(text))
    assert missing == [], f"docs/{note}.md links to missing sections: {missing}"
