"""``scmulan._warnings``: every warning points at the first frame outside scmulan, however deep it was raised."""

from __future__ import annotations

import linecache
from pathlib import Path

import pytest

import scmulan
from scmulan._warnings import warn

# functions that run as if they were scmulan modules (their globals say so), two levels deep
_SCMULAN_CODE = """
def inner(message):
    warn(message, FutureWarning)

def outer(message):
    inner(message)
"""


@pytest.fixture
def scmulan_function():
    namespace = {"__name__": "scmulan.some._module", "warn": warn}
    exec(_SCMULAN_CODE, namespace)
    return namespace["outer"]


def test_a_warning_from_deep_inside_scmulan_points_at_the_users_line(scmulan_function):
    with pytest.warns(FutureWarning, match="renamed") as caught:
        scmulan_function("renamed")
    assert caught[0].filename == __file__
    assert 'scmulan_function("renamed")' in linecache.getline(__file__, caught[0].lineno)


def test_a_direct_call_points_at_the_caller():
    with pytest.warns(UserWarning, match="careful") as caught:
        warn("careful")
    assert caught[0].filename == __file__
    assert 'warn("careful")' in linecache.getline(__file__, caught[0].lineno)


def test_the_package_warns_only_through_the_helper():
    package = Path(scmulan.__file__).parent
    offenders = [
        f"{path.relative_to(package)}:{number}"
        for path in sorted(package.rglob("*.py"))
        if path.name != "_warnings.py"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if "warnings.warn(" in line or "stacklevel" in line
    ]
    assert not offenders, f"use `from scmulan._warnings import warn` (no stacklevel) instead, at: {offenders}"
