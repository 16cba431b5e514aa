"""Stored tutorial outputs: executed notebooks kept in the repository, so Read the Docs publishes them without running.

The tutorials are MyST-Markdown notebooks in the repository's ``tutorials/`` folder. Every build that executes them
(``make docs``, so CI's ``.ci/run``) writes each executed notebook, outputs included, to
``docs/tutorials/_executed/<name>.ipynb`` at the end of a successful build, with provenance in its metadata
(``scmulan_outputs``: the commit and whether the worktree had uncommitted changes, the UTC time, the run time and
the SHA-256 of the tutorial source it was executed from). Commit those files with the tutorial.

A build with execution off (Read the Docs, where ``READTHEDOCS`` is set; or ``SCMULAN_DOCS_EXECUTE=off``) copies the
stored notebook into ``docs/tutorials/`` instead of the Markdown source, when it was executed from the current
source; a tutorial without a stored notebook, or changed since, is published from its source without outputs, and
the tutorials page says which. The tutorials page prints, per tutorial, the commit its outputs came from.

Outputs cannot go stale unnoticed: on CI (``CI`` set) an executing build warns, so fails under ``-W``, when a stored
notebook was executed from another version of its tutorial, naming the fix (run ``make docs`` and commit
``docs/tutorials/_executed/``). The functions below are plain Python (tested without Sphinx); ``docs/conf.py``
calls :func:`sync` and :func:`write_fragment` before Sphinx reads any page, and :func:`connect` for the hooks.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

STORE = "_executed"  # under docs/tutorials/
META_KEY = "scmulan_outputs"
FRAGMENT = Path("generated") / "tutorial_outputs" / "provenance.md"  # included by tutorials/index.md
FIX = "run `make docs` (it executes every tutorial and stores the outputs) and commit docs/tutorials/_executed/"


def execution_mode(environ: dict[str, str] | os._Environ) -> str:
    """myst-nb's ``nb_execution_mode``: ``$SCMULAN_DOCS_EXECUTE`` if set, else ``"off"`` on Read the Docs
    (``READTHEDOCS`` set: the stored outputs are published), else ``"force"`` (every tutorial, every build)."""
    return environ.get("SCMULAN_DOCS_EXECUTE") or ("off" if environ.get("READTHEDOCS") else "force")


def source_sha256(path: Path) -> str:
    """SHA-256 of a tutorial source file."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def git_commit(root: Path) -> tuple[str, bool]:
    """``(commit, worktree_dirty)`` of the repository at ``root``; ``("unknown", False)`` outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", ".", ":(exclude)docs"], cwd=root, capture_output=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False
    return commit, bool(status.strip())


def stored_metadata(store_dir: Path, name: str) -> dict | None:
    """The provenance recorded in the stored notebook of tutorial ``name`` (a file stem), or ``None``."""
    path = Path(store_dir) / f"{name}.ipynb"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))["metadata"][META_KEY]
    except (ValueError, KeyError):
        return None


@dataclass(frozen=True)
class Tutorial:
    """One tutorial: its source, its stored notebook's provenance and which of the two a build publishes."""

    source: Path
    stored: dict | None

    @property
    def name(self) -> str:
        return self.source.stem

    @property
    def state(self) -> str:
        """``"fresh"`` (stored outputs of the current source), ``"stale"`` (of another version) or ``"missing"``."""
        if self.stored is None:
            return "missing"
        return "fresh" if self.stored.get("source_sha256") == source_sha256(self.source) else "stale"


def tutorials_of(sources: list[Path], store_dir: Path) -> list[Tutorial]:
    """The tutorials with what is stored for each."""
    return [Tutorial(src, stored_metadata(store_dir, src.stem)) for src in sources]


def sync(tutorials: list[Tutorial], dst_dir: Path, store_dir: Path, *, execute: bool) -> list[Path]:
    """Put into ``dst_dir`` (docs/tutorials/) the file each tutorial is built from; remove every other copy.

    Executing builds use the sources; builds with execution off use the fresh stored notebooks (the others'
    sources). ``index.md`` is kept. Returns the files now in ``dst_dir``.
    """
    chosen = {}
    for tut in tutorials:
        use_stored = not execute and tut.state == "fresh"
        chosen[tut.name] = Path(store_dir) / f"{tut.name}.ipynb" if use_stored else tut.source
    wanted = {f"{name}{src.suffix}" for name, src in chosen.items()}
    for copy in [*Path(dst_dir).glob("*.md"), *Path(dst_dir).glob("*.ipynb")]:
        if copy.name != "index.md" and copy.name not in wanted:
            copy.unlink()
    out = []
    for name, src in chosen.items():
        dst = Path(dst_dir) / f"{name}{src.suffix}"
        if not dst.is_file() or dst.read_bytes() != src.read_bytes():
            shutil.copyfile(src, dst)
        out.append(dst)
    return out


def store_executed(
    tutorials: list[Tutorial],
    executed_dir: Path,
    store_dir: Path,
    *,
    commit: str,
    dirty: bool,
    runtimes: dict[str, float | None],
    now: datetime | None = None,
) -> list[Path]:
    """Write each tutorial's executed notebook (myst-nb's ``jupyter_execute/tutorials/<name>.ipynb``) to the store.

    The notebook's metadata gets ``scmulan_outputs`` (commit, worktree_dirty, executed_utc, runtime_s,
    source_sha256). Tutorials without an executed notebook (not executed by this build) are left as they are.
    Returns the files written.
    """
    now = now or datetime.now(UTC)
    Path(store_dir).mkdir(parents=True, exist_ok=True)
    written = []
    for tut in tutorials:
        executed = Path(executed_dir) / f"{tut.name}.ipynb"
        if not executed.is_file():
            continue
        nb = json.loads(executed.read_text(encoding="utf-8"))
        runtime = runtimes.get(tut.name)
        nb.setdefault("metadata", {})[META_KEY] = {
            "commit": commit,
            "worktree_dirty": dirty,
            "executed_utc": now.strftime("%Y-%m-%d %H:%M"),
            "runtime_s": round(runtime, 1) if runtime is not None else None,
            "source_sha256": source_sha256(tut.source),
        }
        path = Path(store_dir) / f"{tut.name}.ipynb"
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(path)
    return written


def _commit_text(meta: dict) -> str:
    commit = str(meta.get("commit", "unknown"))
    return f"`{commit[:10]}`" + (" (with uncommitted changes)" if meta.get("worktree_dirty") else "")


def provenance_markdown(tutorials: list[Tutorial], *, execute: bool, commit: str, dirty: bool) -> str:
    """The tutorials page's section saying where the outputs shown come from."""
    if not tutorials:
        return ""
    if execute:
        where = _commit_text({"commit": commit, "worktree_dirty": dirty})
        return (
            f"The outputs on these pages come from executing every tutorial while this site was built, at commit "
            f"{where}. The table gives each one's run time on the CPU of the build machine.\n\n"
            "```{nb-exec-table}\n```\n"
        )
    lines = [
        "These pages show outputs stored in the repository (`docs/tutorials/_executed/`): the executed notebooks "
        "that `make docs` wrote, which CI re-executes on every change. This site was built without executing them "
        f"(commit {_commit_text({'commit': commit, 'worktree_dirty': dirty})}).",
        "",
        "| tutorial | outputs from commit | executed (UTC) | run time |",
        "| --- | --- | --- | ---: |",
    ]
    notes = []
    for tut in tutorials:
        meta = tut.stored or {}
        runtime = meta.get("runtime_s")
        when = meta.get("executed_utc", "–")
        if tut.state == "fresh":
            row = (_commit_text(meta), when, f"{runtime:.0f} s" if runtime is not None else "–")
        elif tut.state == "stale":
            row = ("shown without outputs", "–", "–")
            notes.append(f"`{tut.name}` changed after its outputs were stored (at {_commit_text(meta)})")
        else:
            row = ("shown without outputs", "–", "–")
            notes.append(f"`{tut.name}` has no stored outputs yet")
        lines.append(f"| {tut.name} | " + " | ".join(row) + " |")
    if notes:
        lines += ["", "; ".join(notes) + f": to publish them, {FIX}."]
    return "\n".join(lines) + "\n"


def stale_warnings(tutorials: list[Tutorial]) -> list[str]:
    """One message per tutorial whose stored outputs were executed from another version of it."""
    return [
        f"[tutorial_outputs] docs/tutorials/{STORE}/{tut.name}.ipynb was executed from another version of "
        f"tutorials/{tut.source.name} (stored at {_commit_text(tut.stored)}): Read the Docs would publish it "
        f"without outputs; {FIX}."
        for tut in tutorials
        if tut.state == "stale"
    ]


def write_fragment(srcdir: Path, text: str) -> Path:
    """Write the tutorials page's provenance section (``generated/tutorial_outputs/provenance.md``)."""
    path = Path(srcdir) / FRAGMENT
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    return path


def connect(app, tutorials: list[Tutorial]) -> None:
    """Hooks of ``docs/conf.py``: warn about stale stored outputs on CI, store the executed tutorials at the end."""
    from sphinx.util import logging

    logger = logging.getLogger(__name__)

    def check(app_) -> None:
        if app_.config.nb_execution_mode != "off" and os.environ.get("CI"):
            for msg in stale_warnings(tutorials):
                logger.warning(msg)

    def store(app_, exception) -> None:
        if exception is not None or app_.config.nb_execution_mode == "off":
            return
        from myst_nb.sphinx_ import NbMetadataCollector

        runtimes = {}
        for tut in tutorials:
            data = NbMetadataCollector.get_exec_data(app_.env, f"tutorials/{tut.name}") or {}
            runtimes[tut.name] = data.get("runtime")
        commit, dirty = git_commit(Path(app_.srcdir).parent)
        written = store_executed(
            tutorials,
            Path(app_.outdir).parent / "jupyter_execute" / "tutorials",
            Path(app_.srcdir) / "tutorials" / STORE,
            commit=commit,
            dirty=dirty,
            runtimes=runtimes,
        )
        if written:
            logger.info("[tutorial_outputs] stored %d executed tutorials in docs/tutorials/%s", len(written), STORE)

    app.connect("builder-inited", check)
    app.connect("build-finished", store)
