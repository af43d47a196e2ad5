"""The README and docs/ are self-contained: every relative markdown link resolves to a file of the repository."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
# [text](target) and ![alt](target); the target ends at whitespace or ')' (an optional "title" is ignored)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
EXTERNAL = ("http://", "https://", "mailto:", "#")


def md_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def relative_links(text: str) -> list[str]:
    text = FENCE.sub("", text)  # code blocks hold commands and output, not links
    text = re.sub(r"`[^`\n]*`", "", text)  # nor do inline code spans
    return [t for t in LINK.findall(text) if not t.startswith(EXTERNAL)]


def broken_links(md: Path, text: str | None = None) -> list[str]:
    """The relative link targets of ``text`` (default: the file's own) that leave the repository or do not exist."""
    bad = []
    text = md.read_text(encoding="utf-8") if text is None else text
    for target in relative_links(text):
        path = target.split("#", 1)[0].split("?", 1)[0]
        resolved = (md.parent / path).resolve()
        if not resolved.is_relative_to(ROOT):
            bad.append(f"{target} (leaves the repository)")
        elif not resolved.exists():
            bad.append(f"{target} (no such file)")
    return bad


def test_link_pattern_finds_relative_links_only():
    text = ("see [a](docs/a.md#x), ![fig](b.png), [web](https://x.org), [top](#algorithms), "
            "`[not](a link)`\n```\n[nor](this.md)\n```\n")
    assert relative_links(text) == ["docs/a.md#x", "b.png"]


def test_checker_flags_missing_and_outside_targets():
    md = ROOT / "docs" / "probe.md"  # only its folder matters: the text is given
    text = "[gone](no_such_file.md) [out](../../shared/specs/x.md) [ok](../README.md) [ok2](algorithms/grpo.md#keys)"
    assert broken_links(md, text) == ["no_such_file.md (no such file)", "../../shared/specs/x.md (leaves the repository)"]


@pytest.mark.parametrize("md", md_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve_inside_the_repository(md):
    assert broken_links(md) == []


# a path into the specs folder, or a spec file's name with a section ("spec ppr-tpgrpo-drm.md §3")
SPEC_CITE = re.compile(r"shared/specs|[a-z]+(?:-[a-z]+)+\.md\s*§")


def test_no_doc_cites_the_spec_files():
    """Docs, code and configs cite papers and equations, never the project's private spec files."""
    files = [*md_files(), *(ROOT / "src").rglob("*.py"), *(ROOT / "conf").rglob("*.yaml"), *(ROOT / "tests").rglob("*.py")]
    hits = [str(p.relative_to(ROOT)) for p in files
            if p.name != "test_docs_links.py" and SPEC_CITE.search(p.read_text(encoding="utf-8"))]
    assert hits == []


def test_the_spec_citation_pattern_catches_both_forms():
    assert SPEC_CITE.search("(Wang et al., 2025; spec ppr-tpgrpo-drm.md §3)")
    assert SPEC_CITE.search("see ../../shared/specs/prime.md")
    assert not SPEC_CITE.search("(Wang et al., 2025, Eq. 3) and docs/algorithms/drm.md")


def test_every_algorithm_has_a_page_in_the_index():
    algos = sorted(p.stem for p in (ROOT / "conf" / "algo").glob("*.yaml")
                   if p.stem not in ("sft", "ppr_grpo"))  # sft makes warm starts; ppr_grpo is on PPR's page
    index = (ROOT / "docs" / "algorithms" / "README.md").read_text(encoding="utf-8")
    missing = [a for a in algos if not (ROOT / "docs" / "algorithms" / f"{a}.md").exists() or f"({a}.md)" not in index]
    assert missing == []


def leaf_keys(node, prefix: str = "") -> list[str]:
    """Dotted keys of a config node's leaves (``defaults`` and ``_target_`` are not settings)."""
    out = []
    for k, v in node.items():
        if k in ("defaults", "_target_"):
            continue
        out += leaf_keys(v, f"{prefix}{k}.") if isinstance(v, dict) and v else [f"{prefix}{k}"]
    return out


def test_leaf_keys_of_a_nested_node():
    node = {"defaults": ["grpo"], "_target_": "x", "a": 1, "b": {"c": 2, "d": {"e": None}}}
    assert leaf_keys(node) == ["a", "b.c", "b.d.e"]


@pytest.mark.parametrize("algo", sorted(p.stem for p in (ROOT / "docs" / "algorithms").glob("*.md") if p.stem != "README"))
def test_algorithm_page_lists_every_key_of_its_node(algo):
    yaml = pytest.importorskip("yaml")
    node = yaml.safe_load((ROOT / "conf" / "algo" / f"{algo}.yaml").read_text(encoding="utf-8"))
    page = (ROOT / "docs" / "algorithms" / f"{algo}.md").read_text(encoding="utf-8")
    keys = [k for k in leaf_keys(node) if not str(node.get(k.split(".")[0], "")).startswith("${")]
    assert [k for k in keys if f"`algo.{k}`" not in page] == []
