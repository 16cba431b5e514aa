"""Cross-references: intersphinx that works offline, public paths, and short names in the API pages.

When Sphinx cannot resolve a Python reference (``missing-reference``), these are tried in order:

Public aliases and the defining path
    Type hints and base classes carry the defining module of an object, e.g.
    ``torch.nn.modules.module.Module`` or ``scvi.model.base._base_model.BaseModelClass``, while inventories
    hold the public name (``torch.nn.Module``). The shortest public path that yields the same object is
    tried, in this project and in the intersphinx inventories. The other way round, a docstring names the
    public path (``lightning.pytorch.Trainer``) while the project documents the object under its defining
    module (``lightning.pytorch.trainer.trainer.Trainer``): that longer path is tried too, when it has no
    ``_private`` component.

Short names within scmulan
    A docstring says ``:meth:`to_dict``` or ``:class:`CellSource``` and means the object next to it. Sphinx
    loses that context in autosummary tables, and for objects documented under a re-exported path
    (``scmulan.Vocabulary`` is defined in ``scmulan.vocab``). The name is looked up in the page's object
    (``generated/scmulan.Vocabulary`` -> ``scmulan.Vocabulary.to_dict``) and its parents, in the current
    module, and finally as the *unique* documented scmulan object of that name. Ambiguous or unknown names
    still warn.

Offline builds, and objects another project does not list
    Each intersphinx project gets a second, local inventory location: an *empty* inventory written into
    ``generated/``. When the project's ``objects.inv`` cannot be downloaded (no network), Sphinx falls back
    to the empty one and logs that at info level instead of warning, so the ``-W`` build does not fail. A
    reference to such a project is then not linked, but it is still checked: the referenced object must be
    importable under a public path (no ``_private`` component), or the usual nitpicky warning is emitted.
    With network (Read the Docs) the real inventories load and link as usual. The same check applies when a
    project's inventory loaded but lists the object under none of the names above (inventories are other
    projects' choices and change between their releases): the reference is left unlinked and logged at info
    level, so that it cannot fail the ``-W`` build, while a name that does not import still warns.
    References to scmulan's own objects never take this path. ``SCMULAN_DOCS_OFFLINE=1`` skips the download
    attempts altogether.
"""

from __future__ import annotations

import builtins
import importlib
import sys
import zlib
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.ext import intersphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)

PACKAGE = "scmulan"
STUB_PREFIX = "generated/"
EMPTY_INVENTORY = "generated/empty-objects.inv"
_MISSING = object()


def mapping(projects: dict[str, str], *, srcdir: Path, offline: bool) -> dict[str, tuple[str, tuple[Any, ...]]]:
    """An ``intersphinx_mapping`` with the empty local inventory as every project's fallback.

    ``projects`` maps a project key (the top-level import name, or ``"python"`` for the standard library)
    to its documentation URL.
    """
    path = srcdir / EMPTY_INVENTORY
    path.parent.mkdir(parents=True, exist_ok=True)
    header = b"# Sphinx inventory version 2\n# Project: none\n# Version: 0\n# The remainder of this file is compressed using zlib.\n"
    data = header + zlib.compress(b"")
    if not path.is_file() or path.read_bytes() != data:
        path.write_bytes(data)
    locations = (EMPTY_INVENTORY,) if offline else (None, EMPTY_INVENTORY)
    return {key: (url, locations) for key, url in projects.items()}


# -- Objects by dotted name ------------------------------------------------------------------------------------


def _split(target: str) -> tuple[str, list[str], Any]:
    """(module, attribute path, object) for a dotted name; the object is ``_MISSING`` if it does not resolve."""
    parts = target.split(".")
    if not all(part.isidentifier() for part in parts):  # e.g. a relative ".name" or a literal
        return "", parts, _MISSING
    if len(parts) == 1 and hasattr(builtins, target):
        return "builtins", parts, getattr(builtins, target)
    for i in range(len(parts), 0, -1):
        modname = ".".join(parts[:i])
        try:
            obj = importlib.import_module(modname)
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr, _MISSING)
            if obj is _MISSING:
                break
        return modname, parts[i:], obj
    return "", parts, _MISSING


def public_aliases(target: str) -> list[str]:
    """Shorter public paths to the object named by ``target``, shortest first."""
    modname, attrs, obj = _split(target)
    if obj is _MISSING or not attrs:
        return []
    mod_parts = modname.split(".")
    aliases = []
    for i in range(1, len(mod_parts)):
        if mod_parts[i - 1].startswith("_"):
            break
        candidate = ".".join([*mod_parts[:i], *attrs])
        if _split(candidate)[2] is obj:
            aliases.append(candidate)
    return aliases


def defining_path(target: str) -> str | None:
    """The path of the object named by ``target`` in its defining module, if longer, public and different."""
    _, attrs, obj = _split(target)
    if obj is _MISSING or not attrs:
        return None
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        return None
    candidate = f"{module}.{qualname}"
    if candidate == target or not _is_public_and_importable(candidate) or _split(candidate)[2] is not obj:
        return None
    return candidate


def _is_public_and_importable(target: str) -> bool:
    modname, attrs, obj = _split(target)
    return obj is not _MISSING and not any(part.startswith("_") for part in [*modname.split("."), *attrs])


def _project_of(target: str, projects: dict[str, Any]) -> str | None:
    top = target.split(".", 1)[0]
    if top in projects:
        return top
    if "python" in projects and (top in sys.stdlib_module_names or hasattr(builtins, top)):
        return "python"
    return None


def _loaded_projects(env: BuildEnvironment) -> set[str]:
    named = getattr(env, "intersphinx_named_inventory", {})
    return {name for name, inventory in named.items() if inventory}


# -- Short names within the package ----------------------------------------------------------------------------


def _contexts(node: nodes.Element) -> list[str]:
    """Dotted prefixes to try for a short name, most specific first."""
    contexts = []
    refdoc = node.get("refdoc", "")
    if refdoc.startswith(STUB_PREFIX):
        parts = refdoc.removeprefix(STUB_PREFIX).split(".")
        contexts += [".".join(parts[:i]) for i in range(len(parts), 0, -1)]
    module, cls = node.get("py:module"), node.get("py:class")
    if module and cls:
        contexts.append(f"{module}.{cls}")
    if module:
        contexts.append(module)
    return [c for c in dict.fromkeys(contexts) if c == PACKAGE or c.startswith(PACKAGE + ".")]


def _package_candidates(env: BuildEnvironment, node: nodes.Element) -> list[str]:
    target = node["reftarget"].lstrip("~.")
    objects = env.get_domain("py").objects
    for context in _contexts(node):
        if f"{context}.{target}" in objects:
            return [f"{context}.{target}"]
    matches = [name for name in objects if name.startswith(PACKAGE + ".") and name.endswith("." + target)]
    return matches if len(matches) == 1 else []


# -- The handler ------------------------------------------------------------------------------------------------


def _resolve_as(app: Sphinx, env: BuildEnvironment, node: nodes.Element, contnode: nodes.TextElement, target: str):
    alias_node = node.deepcopy()
    alias_node["reftarget"] = target
    domain = env.get_domain("py")
    refdoc = node.get("refdoc", "")
    for reftype in dict.fromkeys([node["reftype"], "obj"]):
        resolved = domain.resolve_xref(env, refdoc, app.builder, reftype, target, alias_node, contnode)
        if resolved is not None:
            return resolved
    return intersphinx.missing_reference(app, env, alias_node, contnode)


def missing_reference(
    app: Sphinx, env: BuildEnvironment, node: nodes.Element, contnode: nodes.TextElement
) -> nodes.Element | None:
    """Try public aliases, the defining path and short names in scmulan, then accept importable external objects."""
    if node.get("refdomain") != "py" or not node.get("reftarget"):
        return None
    target = node["reftarget"]
    aliases = public_aliases(target)
    longer = defining_path(target)
    for candidate in [*aliases, *([longer] if longer else []), *_package_candidates(env, node)]:
        resolved = _resolve_as(app, env, node, contnode, candidate)
        if resolved is not None:
            return resolved
    project = _project_of(target, app.config.intersphinx_mapping)
    if project is not None and any(_is_public_and_importable(name) for name in [target, *aliases]):
        if project in _loaded_projects(env):
            logger.info(
                "[xrefs] %s is not in the %s inventory (nor %s); left unlinked",
                target,
                project,
                ", ".join([*aliases, *([longer] if longer else [])]) or "another path",
                location=node,
            )
        return contnode
    return None


def report_offline(app: Sphinx) -> None:
    """Say which inventories are unavailable (after intersphinx has loaded them)."""
    missing = sorted(set(app.config.intersphinx_mapping) - _loaded_projects(app.env))
    if missing:
        logger.info(
            "[xrefs] no intersphinx inventory for %s (offline?): references to them are checked by import "
            "and not linked",
            ", ".join(missing),
        )


def setup(app: Sphinx) -> dict[str, object]:
    """Register the handlers: after intersphinx (500), before Sphinx's builtin resolver (900)."""
    app.setup_extension("sphinx.ext.intersphinx")
    app.connect("builder-inited", report_offline, priority=800)
    app.connect("missing-reference", missing_reference, priority=700)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
