"""Every relative link in the README, docs/ and experiments/README.md points to a file that exists (and to a heading
that exists, where it names one), so no page of the documentation is out of reach."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "experiments" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _prose(text: str) -> str:
    """The text outside fenced code blocks and inline code."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def _anchors(path: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    seen: dict[str, int] = {}
    for line in re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M).splitlines():
        heading = re.match(r"#{1,6} (.+)", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            yield slug if count == 0 else f"{slug}-{count}"


def _broken(page: Path) -> list[str]:
    broken = []
    for target in LINK.findall(_prose(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in set(_anchors(linked)):
            broken.append(f"{target}: no such heading")
    return broken


def test_every_relative_link_resolves():
    broken = {str(page.relative_to(ROOT)): found for page in PAGES if (found := _broken(page))}
    assert broken == {}


def test_every_docs_page_is_reachable_from_the_readme():
    reachable, frontier = set(), [ROOT / "README.md"]
    while frontier:
        page = frontier.pop()
        if page in reachable:
            continue
        reachable.add(page)
        for target in LINK.findall(_prose(page.read_text(encoding="utf-8"))):
            linked = (page.parent / target.partition("#")[0]).resolve()
            if linked.suffix == ".md" and linked.is_file() and ROOT in linked.parents:
                frontier.append(linked)
    assert sorted(p.name for p in (ROOT / "docs").glob("*.md") if p.resolve() not in reachable) == []
