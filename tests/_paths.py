"""Locating the shared reference files (never copied into the repository)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PARITY_ENV = "SCMULAN_PARITY_DIR"
PARITY_SKIP_REASON = (
    "legacy parity files not found: set SCMULAN_PARITY_DIR or place ../shared/reference/legacy_parity next to the repo"
)
_RELATIVE = Path("shared") / "reference" / "legacy_parity"
REPO_ROOT = Path(__file__).resolve().parents[1]


def legacy_parity_dir() -> Path | None:
    """The legacy parity folder: ``$SCMULAN_PARITY_DIR`` if set, else the first ``shared/reference/legacy_parity``
    found walking up from the repository root's parent, else ``None``.
    """
    env = os.environ.get(PARITY_ENV)
    if env:
        return Path(env)
    for parent in REPO_ROOT.parents:
        candidate = parent / _RELATIVE
        if candidate.is_dir():
            return candidate
    return None


def require_legacy_parity_dir() -> Path:
    """:func:`legacy_parity_dir`, skipping the calling test when there is none."""
    path = legacy_parity_dir()
    if path is None:
        pytest.skip(PARITY_SKIP_REASON)
    return path
