"""Make numpydoc docstrings written in the scverse style (types in the signature only) render cleanly.

These hooks run on the raw docstring, before napoleon turns it into reStructuredText:

- **Attributes sections.** A class's ``Attributes`` section is moved onto the attributes themselves: the
  class page of ``_templates/autosummary/class.rst`` documents every attribute with ``autoattribute``, so
  the section would describe each one twice (and Sphinx would warn about duplicate objects). Each
  attribute gets its description from the section, as if the source had a ``#:`` comment.
- **Inherited docstrings of values.** A constant or class attribute without a docstring would show the
  docstring of its type (``dict``, ``tuple``, a NamedTuple's "Alias for field number 0"); it is dropped.
- **Returns / Yields sections that are only prose** (``Returns\\n-------\\nThe sentences of ...``) would be
  read by napoleon as a *type*, and become broken cross-references; they become the description of an
  entry without name and type, and the return type comes from the annotation (sphinx-autodoc-typehints).
- **Attribute and property summaries with a colon** (``"Every field: ..."``) would be split by napoleon
  into a type and a description (its ``type: text`` convention); the colon is kept in the text.

And the "Bases:" line of a class shows a private scmulan base class (a mixin, not documented) through
the bases it has itself.
"""

from __future__ import annotations

import importlib
import inspect
import re
from typing import Any

from sphinx.application import Sphinx
from sphinx.errors import PycodeError
from sphinx.pycode import ModuleAnalyzer

import xrefs

_HEADER_RULE = re.compile(r"^\s*-{3,}\s*$")
_NAMED_ENTRY = re.compile(r"^\*{0,2}\w+\s+:\s+\S")  # numpydoc "name : type"
_XREF_OR_CODE = re.compile(r"(:(?:[a-zA-Z0-9]+[\-_+:.])*[a-zA-Z0-9]+:`.+?`|``.+?``|`.+?`)")  # as napoleon


def _sections(lines: list[str]) -> list[tuple[str, int, int]]:
    """(title, start, end) of every numpydoc section; start is the title line, end is exclusive."""
    heads = [
        i
        for i in range(len(lines) - 1)
        if lines[i].strip() and not lines[i].startswith(" ") and _HEADER_RULE.match(lines[i + 1])
    ]
    return [(lines[h].strip(), h, (heads[k + 1] if k + 1 < len(heads) else len(lines))) for k, h in enumerate(heads)]


def _attribute_entries(lines: list[str]) -> dict[str, list[str]]:
    """Descriptions of the entries of an ``Attributes`` section, keyed by attribute name."""
    for title, start, end in _sections(lines):
        if title.lower() != "attributes":
            continue
        entries: dict[str, list[str]] = {}
        name = None
        for line in lines[start + 2 : end]:
            if line.strip() and not line.startswith(" "):
                name = line.split(":", 1)[0].strip()
                entries[name] = []
            elif name is not None:
                entries[name].append(line)
        # "a, b" documents two attributes with one description
        return {
            name.strip(): inspect.cleandoc("\n".join(desc)).splitlines()
            for names, desc in entries.items()
            for name in names.split(",")
        }
    return {}


def _type_like(line: str) -> bool:
    """Whether the first line of a Returns entry is a type or ``name : type`` rather than prose."""
    line = line.strip()
    if _NAMED_ENTRY.match(line):
        return True
    compact = re.sub(r"\s*([|,])\s*", r"\1", line)
    return bool(compact) and " " not in compact and not compact.endswith(".")


def _resolve(dotted: str) -> Any:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr, None)
        return obj
    return None


def _is_inherited_value_doc(obj: Any, lines: list[str]) -> bool:
    text = "\n".join(lines).strip()
    if not text:
        return False
    if re.fullmatch(r"Alias for field number \d+", text):
        return True
    type_doc = inspect.getdoc(type(obj))
    return type_doc is not None and text == inspect.cleandoc(type_doc).strip()


def _move_attribute_docs(cls: type, section: list[str]) -> list[str]:
    """Give the class's attributes their descriptions from its Attributes section; return what stays.

    The descriptions are registered as if the source had ``#:`` comments (the module analyzer's
    ``attr_docs``), which autodoc reads for every attribute, also for annotation-only dataclass fields that
    have no docstring. Entries that are not attributes of the class (e.g. set in ``__init__``) stay in the
    section; a ``#:`` comment in the source wins over the section.
    """
    entries = _attribute_entries(section)
    annotations = {name for klass in inspect.getmro(cls) for name in getattr(klass, "__annotations__", {})}
    moved = {name for name in entries if name in annotations or hasattr(cls, name)}
    if not moved:
        return section
    try:
        analyzer = ModuleAnalyzer.for_module(cls.__module__)
        analyzer.analyze()
    except PycodeError:
        return section
    for name in moved:
        analyzer.attr_docs.setdefault((cls.__qualname__, name), [*entries[name], ""])
    if moved == set(entries):
        return []
    kept = section[:2]
    names: set[str] = set()
    for line in section[2:]:
        if line.strip() and not line.startswith(" "):
            names = {name.strip() for name in line.split(":", 1)[0].split(",")}
        if not names <= moved:
            kept.append(line)
    return kept


def process_docstring(app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    """The fixes of the module docstring, applied in place (before napoleon)."""
    if what in {"data", "attribute", "property"}:
        if what != "property" and _is_inherited_value_doc(obj, lines):
            lines[:] = []
        if not "".join(lines).strip() and what in {"attribute", "property"}:
            owner = _resolve(name.rsplit(".", 1)[0])
            if inspect.isclass(owner):
                doc = inspect.getdoc(owner) or ""
                lines[:] = _attribute_entries(doc.splitlines()).get(name.rsplit(".", 1)[1], [])
        if lines and lines[0].strip():
            first = _XREF_OR_CODE.sub("", lines[0])
            if re.search(r"(?<!:):(?!:)", first):
                lines[0] = ": " + lines[0]  # napoleon splits at the first colon; an empty type keeps the text
        return

    for title, start, end in reversed(_sections(lines)):
        if what == "class" and title.lower() == "attributes":
            kept = _move_attribute_docs(obj, lines[start:end])
            lines[start:end] = kept
        elif title.lower() in {"returns", "yields"}:
            body = lines[start + 2 : end]
            first = next((line for line in body if line.strip()), None)
            if first is not None and not _type_like(first):
                # An entry with neither name nor type (a lone colon): napoleon keeps the text as description.
                text = inspect.cleandoc("\n".join(body)).splitlines()
                lines[start + 2 : end] = [":", *("    " + t if t else "" for t in text), ""]


def _shown_bases(base: type) -> list[type]:
    """``base``, or in place of a private scmulan class (a mixin) the bases it has itself."""
    path = f"{base.__module__}.{base.__qualname__}"
    private = any(part.startswith("_") for part in path.split("."))
    if base.__module__.split(".")[0] != "scmulan" or not private or xrefs.public_aliases(path):
        return [base]
    return [shown for parent in base.__bases__ if parent is not object for shown in _shown_bases(parent)]


def process_bases(app: Sphinx, name: str, obj: Any, options: Any, bases: list[type]) -> None:
    """Show private scmulan base classes (mixins, not documented) through their own bases in "Bases:"."""
    shown = list(dict.fromkeys(shown for base in bases for shown in _shown_bases(base)))
    bases[:] = shown or [object]


def setup(app: Sphinx) -> dict[str, object]:
    """Run before napoleon (priority 500)."""
    app.setup_extension("sphinx.ext.autodoc")
    app.connect("autodoc-process-docstring", process_docstring, priority=400)
    app.connect("autodoc-process-bases", process_bases)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
