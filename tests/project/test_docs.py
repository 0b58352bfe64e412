"""The docs a newcomer reads: the README stays short, every relative link and ``#anchor`` in the
README, docs/ and the folder READMEs resolves, every repository path they cite exists, and every
test the reliability tables name is a test that exists.

Why tests: the pages move with the code (a module renamed, a heading reworded, a test file moved),
and a broken link or a row naming a test that is gone reads as true until someone follows it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

#: The pages checked: the README, docs/, and the READMEs of the folders people open.
PAGES = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md"), REPO / "k8s" / "README.md",
                REPO / "k8s-overlays" / "raycronjob" / "README.md", REPO / "benchmarks" / "README.md"])

#: Where a path cited in backticks may live: the repository's top-level folders, or medxfer's packages
#: (the module table names them without the ``medxfer/`` prefix).
TOP_LEVEL = ("medxfer/", "tests/", "benchmarks/", "jobs/", "k8s/", "k8s-overlays/", "docs/", "constraints/", ".ci/")

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)
LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def prose(text: str) -> str:
    """The page without fenced code blocks and inline code, where brackets are not links."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text lowercased, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text, not its target
    text = re.sub(r"[`*]|<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every ``#anchor`` a page has: its headings (repeats numbered as GitHub numbers them) and explicit ids."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in FENCE.sub("", page.read_text()).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
        found.update(re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", line))
    return found


def broken_links(page: Path) -> list[str]:
    """Each relative link (or image) of ``page`` whose file, folder or ``#anchor`` is missing."""
    problems = []
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            problems.append(f"{page.relative_to(REPO)}: {target}: no {path}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{page.relative_to(REPO)}: {target}: no heading #{anchor} in {dest.name}")
    return problems


def test_readme_is_a_short_first_read():
    lines = (REPO / "README.md").read_text().count("\n")
    assert lines <= 250, f"README.md has {lines} lines: move detail into docs/ and link it"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_anchor_resolves(page):
    assert page.exists(), f"{page.relative_to(REPO)} is gone: update PAGES"
    assert not broken_links(page), "\n".join(broken_links(page))


def test_a_broken_link_or_anchor_is_found(tmp_path, monkeypatch):
    """The checker itself: a missing file, a missing heading and a heading repeated are told apart."""
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    (tmp_path / "other.md").write_text("# Other page\n\n## Step 1: the `kubectl` part\n\n## Step 1: the `kubectl` part\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#step-1-the-kubectl-part) [again](other.md#step-1-the-kubectl-part-1) "
                    "[self](#a-title) [web](https://example.org/x)\n\n# A title\n\n"
                    "[gone](missing.md) [no heading](other.md#step-2)\n\n```\n[in code](nowhere.md)\n```\n")
    assert broken_links(page) == ["page.md: missing.md: no missing.md",
                                  "page.md: other.md#step-2: no heading #step-2 in other.md"]


def cited_paths(page: Path) -> list[str]:
    """Repository paths a page cites in backticks (``medxfer/lifecycle/card.py``, ``train/resume.py``,
    ``tests/test_x.py::test_y``); placeholders (``<scheme>``) and paths outside the repository are not."""
    out = []
    for code in re.findall(r"`([^`\n]+)`", page.read_text()):
        path = code.split("::", 1)[0].strip()
        if " " in path or "<" in path or "*" in path or "/" not in path or path.startswith(("/", "~", "..")):
            continue
        if re.match(r"^[a-z][a-z0-9+.-]*:", path):
            continue
        out.append(path)
    return out


def _in_a_package(path: str) -> bool:
    """Whether ``path`` starts with one of medxfer's packages (``train/resume.py``)."""
    package = path.split("/", 1)[0]
    return package.isidentifier() and (REPO / "medxfer" / package / "__init__.py").exists()


def _exists(path: str) -> bool:
    return (REPO / path).exists() if path.startswith(TOP_LEVEL) else (REPO / "medxfer" / path).exists()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_module_and_file_a_page_cites_exists(page):
    """A module moved or renamed leaves the page that names it wrong: each path under a repository
    folder, or under one of medxfer's packages, must exist."""
    cited = [p for p in cited_paths(page) if p.startswith(TOP_LEVEL) or _in_a_package(p)]
    missing = sorted({p for p in cited if not _exists(p)})
    assert not missing, f"{page.relative_to(REPO)} cites paths that do not exist: {missing}"


def test_every_test_the_reliability_tables_name_exists():
    """Each ``file::test`` in docs/reliability.md is a test function in that file, wherever under tests/
    the file lives (``; ::test_b`` is a second test of the file named before it)."""
    tests = {}
    for f in (REPO / "tests").rglob("test_*.py"):
        tests.setdefault(f.stem, set()).update(re.findall(r"^(?:async )?def (test_\w+)", f.read_text(), re.M))
    text = (REPO / "docs" / "reliability.md").read_text()
    refs, last, missing = 0, None, []
    for file, name in re.findall(r"(test_\w+)?::(test_\w+)", text):
        file = file or last
        last, refs = file, refs + 1
        if name not in tests.get(file, ()):
            missing.append(f"{file}::{name}")
    assert refs > 150, "the tables' test column was not found"
    assert not missing, f"docs/reliability.md names tests that do not exist: {missing}"
