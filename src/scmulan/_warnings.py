"""The package's one way to warn.

Rule: every warning scmulan issues points at the first frame outside the ``scmulan`` package, that is the line of the
user's code (script, notebook cell or test) that called the public function, however deep inside scmulan the
warning is raised. Call :func:`warn` instead of :func:`warnings.warn`; no module counts ``stacklevel`` by hand.
"""

from __future__ import annotations

import sys
import warnings

__all__ = ["user_stacklevel", "warn"]


def user_stacklevel() -> int:
    """``stacklevel`` that makes a :func:`warnings.warn` issued by the caller point at the first frame outside scmulan.

    Returns
    -------
    The ``stacklevel`` to pass to :func:`warnings.warn` from the function that calls this one.
    """
    frame, level = sys._getframe(2), 2  # the caller's caller
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] == "scmulan":
        frame, level = frame.f_back, level + 1
    return level


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """Issue ``message`` as a ``category`` warning attributed to the user's line (the module's rule).

    Parameters
    ----------
    message
        What happened and what to do about it, in the caller's terms.
    category
        The warning class (:class:`UserWarning`, :class:`FutureWarning` for deprecations, …).
    """
    warnings.warn(message, category, stacklevel=user_stacklevel())
