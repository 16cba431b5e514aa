"""Stored tutorial outputs (docs/_ext/tutorial_outputs.py): what Read the Docs publishes and what CI refuses.

The module is plain Python (no Sphinx import at module level), loaded here by file path.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

MODULE = Path(__file__).resolve().parents[1] / "docs" / "_ext" / "tutorial_outputs.py"


@pytest.fixture(scope="module")
def to():
    spec = importlib.util.spec_from_file_location("scmulan_docs_tutorial_outputs", MODULE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.fixture
def layout(tmp_path):
    """A repository's tutorials/ (two MyST tutorials), docs/tutorials/ with its index.md and a store."""
    src = tmp_path / "tutorials"
    src.mkdir()
    for name in ("01_first", "02_second"):
        (src / f"{name}.md").write_text(
            f"---\nkernelspec:\n  name: python3\n---\n# {name}\n\n```{{code-cell}}\n1 + 1\n```\n"
        )
    dst = tmp_path / "docs" / "tutorials"
    dst.mkdir(parents=True)
    (dst / "index.md").write_text("# Tutorials\n")
    executed = tmp_path / "docs" / "_build" / "jupyter_execute" / "tutorials"
    executed.mkdir(parents=True)
    for name in ("01_first", "02_second"):
        nb = {
            "cells": [{"cell_type": "code", "source": "1 + 1", "outputs": [{"output_type": "execute_result"}]}],
            "metadata": {"kernelspec": {"name": "python3"}},
            "nbformat": 4,
            "nbformat_minor": 5,
        }
        (executed / f"{name}.ipynb").write_text(json.dumps(nb))
    return {"src": src, "dst": dst, "store": dst / "_executed", "executed": executed}


def sources(layout) -> list[Path]:
    return sorted(layout["src"].glob("*.md"))


def test_execution_mode_is_off_on_read_the_docs_unless_asked(to):
    assert to.execution_mode({}) == "force"
    assert to.execution_mode({"READTHEDOCS": "True"}) == "off"
    assert to.execution_mode({"READTHEDOCS": "True", "SCMULAN_DOCS_EXECUTE": "force"}) == "force"
    assert to.execution_mode({"SCMULAN_DOCS_EXECUTE": "cache"}) == "cache"


def test_executing_build_uses_sources_and_stores_outputs_with_their_commit(to, layout):
    (layout["dst"] / "03_removed.md").write_text("old copy")  # a tutorial deleted since the last build
    tutorials = to.tutorials_of(sources(layout), layout["store"])
    assert [t.state for t in tutorials] == ["missing", "missing"]

    copied = to.sync(tutorials, layout["dst"], layout["store"], execute=True)
    assert sorted(p.name for p in copied) == ["01_first.md", "02_second.md"]
    assert sorted(p.name for p in layout["dst"].iterdir() if p.is_file()) == ["01_first.md", "02_second.md", "index.md"]

    written = to.store_executed(
        tutorials,
        layout["executed"],
        layout["store"],
        commit="a" * 40,
        dirty=False,
        runtimes={"01_first": 12.34},
        now=datetime(2026, 12, 5, 21, 0, tzinfo=UTC),
    )
    assert [p.name for p in written] == ["01_first.ipynb", "02_second.ipynb"]
    nb = json.loads(written[0].read_text())
    assert nb["cells"][0]["outputs"] == [{"output_type": "execute_result"}]  # the outputs are kept
    assert nb["metadata"]["scmulan_outputs"] == {
        "commit": "a" * 40,
        "worktree_dirty": False,
        "executed_utc": "2026-12-05 21:00",
        "runtime_s": 12.3,
        "source_sha256": to.source_sha256(layout["src"] / "01_first.md"),
    }
    assert [t.state for t in to.tutorials_of(sources(layout), layout["store"])] == ["fresh", "fresh"]


def test_read_the_docs_publishes_fresh_stored_notebooks_and_names_their_commit(to, layout):
    tutorials = to.tutorials_of(sources(layout), layout["store"])
    to.sync(tutorials, layout["dst"], layout["store"], execute=True)  # a local build left .md copies
    to.store_executed(tutorials, layout["executed"], layout["store"], commit="b" * 40, dirty=True, runtimes={})
    tutorials = to.tutorials_of(sources(layout), layout["store"])

    copied = to.sync(tutorials, layout["dst"], layout["store"], execute=False)
    assert sorted(p.name for p in copied) == ["01_first.ipynb", "02_second.ipynb"]
    assert not list(layout["dst"].glob("0*.md"))  # one file per document: the .md copies are gone
    assert (layout["dst"] / "01_first.ipynb").read_bytes() == (layout["store"] / "01_first.ipynb").read_bytes()

    text = to.provenance_markdown(tutorials, execute=False, commit="c" * 40, dirty=False)
    assert "| 01_first | `bbbbbbbbbb` (with uncommitted changes) |" in text
    assert "built without executing them (commit `cccccccccc`)" in text
    assert "nb-exec-table" not in text
    assert to.stale_warnings(tutorials) == []


def test_a_tutorial_changed_since_its_outputs_were_stored_is_shown_without_them_and_fails_ci(to, layout):
    tutorials = to.tutorials_of(sources(layout), layout["store"])
    to.store_executed(tutorials, layout["executed"], layout["store"], commit="d" * 40, dirty=False, runtimes={})
    (layout["src"] / "02_second.md").write_text("---\nkernelspec:\n  name: python3\n---\n# edited\n")
    (layout["store"] / "01_first.ipynb").unlink()
    tutorials = to.tutorials_of(sources(layout), layout["store"])
    assert [t.state for t in tutorials] == ["missing", "stale"]

    copied = to.sync(tutorials, layout["dst"], layout["store"], execute=False)
    assert sorted(p.name for p in copied) == ["01_first.md", "02_second.md"]  # sources, without outputs

    text = to.provenance_markdown(tutorials, execute=False, commit="e" * 40, dirty=False)
    assert "| 02_second | shown without outputs |" in text
    assert "`02_second` changed after its outputs were stored (at `dddddddddd`)" in text
    assert "`01_first` has no stored outputs yet" in text
    assert "run `make docs`" in text
    assert "commit docs/tutorials/_executed/" in text

    (warning,) = to.stale_warnings(tutorials)
    assert "02_second.ipynb was executed from another version of tutorials/02_second.md" in warning
    assert "run `make docs`" in warning


def test_executing_build_page_shows_the_build_commit_and_times(to, layout):
    tutorials = to.tutorials_of(sources(layout), layout["store"])
    text = to.provenance_markdown(tutorials, execute=True, commit="f" * 40, dirty=False)
    assert "while this site was built, at commit `ffffffffff`" in text
    assert "```{nb-exec-table}\n```" in text
    assert to.provenance_markdown([], execute=True, commit="f" * 40, dirty=False) == ""


def test_fragment_is_written_where_the_tutorials_page_includes_it(to, tmp_path):
    path = to.write_fragment(tmp_path, "text\n")
    assert path == tmp_path / "generated" / "tutorial_outputs" / "provenance.md"
    assert path.read_text() == "text\n"
    index = (MODULE.parents[1] / "tutorials" / "index.md").read_text()
    assert "../generated/tutorial_outputs/provenance.md" in index
