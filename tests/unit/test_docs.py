"""The documentation's links and `make` targets resolve.

README.md and every docs/**/*.md are read as text, nothing is run (no subprocess, no network): every relative
link names a file that exists inside the repository, an `#anchor` into a Markdown file names one of its headings
(GitHub's anchor rules), and every `make TARGET` written as code is a target of the Makefile. The docs moved out
of the README into one file per topic; this keeps the links between them from rotting silently.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
# Inline code: a run of n backticks closed by exactly n, never across a blank line (as CommonMark reads it).
CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)((?:(?!\n[ \t]*\n).)+?)(?<!`)\1(?!`)", re.S)
# [text](target) and ![alt](target), an optional title; the text may hold one level of [brackets].
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^\s<>()]+)>?(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
SCHEME = re.compile(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*:|//)")
# `make [-flags] [VAR=value ...] target`; only looked for in code, where commands are written ("make it" in prose is
# not a command).
MAKE = re.compile(r"(?<![\w./-])make(?:\s+(?:-\S+|[A-Za-z_]\w*=\S*))*\s+([A-Za-z0-9_-]+)")
MAKE_TARGET = re.compile(r"^([a-zA-Z0-9_-]+):", re.M)


def unfenced(text: str) -> tuple[str, list[str]]:
    """(text, fenced lines): the text with every fenced code block's lines blanked (offsets of lines kept)."""
    lines, code, fence = [], [], None
    for line in text.split("\n"):
        m = FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)
        elif fence is not None:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not line[m.end():].strip():
                fence = None
            else:
                code.append(line)
        else:
            lines.append(line)
            continue
        lines.append("")
    return "\n".join(lines), code


def split_code(text: str) -> tuple[str, str]:
    """(prose, code) of a Markdown text. The prose keeps every offset and line of the original, with fenced blocks
    and code spans blanked out; the code is the fenced lines and the code spans' contents."""
    prose, code = unfenced(text)
    code.extend(m.group(2) for m in CODE_SPAN.finditer(prose))
    prose = CODE_SPAN.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), prose)
    return prose, "\n".join(code)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: a link keeps its text, lowercase, punctuation other than '-' and '_' removed,
    each space a '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(md: Path) -> set[str]:
    """Every heading anchor of a Markdown file; a repeated heading gets -1, -2, ... as on GitHub."""
    text, _ = unfenced(md.read_text(encoding="utf-8"))
    seen: Counter[str] = Counter()
    found = set()
    for line in text.split("\n"):
        m = HEADING.match(line)
        if m:
            base = slug(m.group(1))
            found.add(f"{base}-{seen[base]}" if seen[base] else base)
            seen[base] += 1
    return found


def broken_links(md: Path, root: Path = ROOT) -> list[str]:
    """'file:line: target (why)' for every relative link of md that does not resolve."""
    prose, _ = split_code(md.read_text(encoding="utf-8"))
    problems = []
    for m in LINK.finditer(prose):
        target = m.group(1)
        if SCHEME.match(target):
            continue
        path, _, anchor = target.partition("#")
        dest = (md.parent / unquote(path)).resolve() if path else md
        where = f"{md.relative_to(root)}:{prose.count(chr(10), 0, m.start()) + 1}: {target}"
        if not dest.is_relative_to(root.resolve()):
            problems.append(f"{where} (outside the repository)")
        elif not dest.exists():
            problems.append(f"{where} (no such file)")
        elif anchor and dest.suffix == ".md" and unquote(anchor) not in anchors(dest):
            problems.append(f"{where} (no heading with that anchor in {dest.relative_to(root.resolve())})")
    return problems


def make_targets_named(md: Path) -> set[str]:
    """Every target of a `make ...` command written as code in md."""
    _, code = split_code(md.read_text(encoding="utf-8"))
    return {m.group(1) for m in MAKE.finditer(code)}


def makefile_targets(makefile: Path = ROOT / "Makefile") -> set[str]:
    return set(MAKE_TARGET.findall(makefile.read_text(encoding="utf-8")))


def doc_id(md: Path) -> str:
    return str(md.relative_to(ROOT))


@pytest.mark.parametrize("md", DOCS, ids=doc_id)
def test_relative_links_resolve(md):
    problems = broken_links(md)
    assert not problems, "broken links:\n" + "\n".join(problems)


@pytest.mark.parametrize("md", DOCS, ids=doc_id)
def test_make_targets_exist(md):
    missing = make_targets_named(md) - makefile_targets()
    assert not missing, f"{doc_id(md)} names make targets the Makefile lacks: {sorted(missing)}"


def test_docs_are_found():
    assert ROOT / "README.md" in DOCS and len(DOCS) > 2
    assert {"test", "bench"} <= make_targets_named(ROOT / "README.md") <= makefile_targets()


def test_slug_follows_github():
    assert slug("Engines: native and python") == "engines-native-and-python"
    assert slug("Capacity at a latency SLO: `--find-capacity`, `--sweep`") == "capacity-at-a-latency-slo---find-capacity---sweep"
    assert slug("The cost gate: instructions per message (`make bench-cost`)") == (
        "the-cost-gate-instructions-per-message-make-bench-cost"
    )
    assert slug("A [link](x.md) and snake_case") == "a-link-and-snake_case"


def test_checker_catches_what_is_broken(tmp_path):
    (tmp_path / "other.md").write_text("# A title\n\n## Twice\n\n## Twice\n\n## Run `make x`: now\n")
    (tmp_path / "img.png").write_bytes(b"")
    md = tmp_path / "doc.md"
    md.write_text(
        "# Doc\n\n"
        "[ok](other.md) [ok](other.md#a-title) [ok](other.md#twice-1) [ok](other.md#run-make-x-now) [ok](#doc) ![ok](img.png) [web](https://x.org/y)\n"
        "[gone](missing.md) [no anchor](other.md#nowhere) [twice too many](other.md#twice-2) [up](../../../etc/passwd)\n"
        "[fenced](#not-a-heading)\n"
        "`[in code](missing.md)`\n\n```\n[in a fence](missing.md)\n# not a heading\n```\n"
        "`make clean`, `make PYTHON=python3.12 test`, make it so, `make nosuch`\n"
    )
    problems = broken_links(md, root=tmp_path)
    assert [p.split(": ", 1)[1].split(" (")[0] for p in problems] == [
        "missing.md", "other.md#nowhere", "other.md#twice-2", "../../../etc/passwd", "#not-a-heading",
    ]
    assert [p.split(": ", 1)[0] for p in problems] == ["doc.md:4"] * 4 + ["doc.md:5"]
    assert make_targets_named(md) == {"clean", "test", "nosuch"}
