"""Build the lists of ``api.md`` from each namespace's ``__all__`` when the docs are built.

``api.md`` includes one fragment per section, ``generated/api_lists/<section>.md``, written here at
``builder-inited``. Each holds the cookiecutter-scverse block (``.. module::``, ``.. currentmodule:: scmulan``
and an ``autosummary`` with ``:toctree: generated``) listing the names that the namespace exports in
``__all__`` *and that exist*. A public name added to an ``__all__`` therefore appears in the API reference
with its docstring on the next build, with no edit to ``api.md``.

Autosummary only scans found source documents, and the fragments are excluded from those (they are
included, not pages), so the stub pages of the fragments are generated here, into ``generated/``. Stub
pages of names that no longer exist are removed, so that a renamed function leaves no orphan page.

Names whose module is not written yet (no file) are skipped, with a log line "[api_lists] skipped ...";
so are top-level lazy names whose module does not define them yet. A module that exists but fails to
import is an error, and a namespace ``__all__`` entry that does not resolve is a warning (``-W`` fails).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import types
from dataclasses import dataclass
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)

PACKAGE = "scmulan"
FRAGMENT_DIR = "generated/api_lists"
STUB_DIR = "generated"
#: Top-level names that are not part of the API reference.
TOP_LEVEL_EXCLUDED = frozenset({"logger"})
#: Members that scmulan classes inherit from other packages (scvi-tools' ``BaseModelClass``) and that a user
#: needs; every other inherited member is left to the other package's documentation (the base class link).
INHERITED_DOCUMENTED = frozenset({"adata", "device", "history", "is_trained", "to_device", "view_anndata_setup"})


@dataclass(frozen=True)
class Section:
    """One section of ``api.md``."""

    key: str  # name of the fragment file, and the submodule for namespace sections
    title: str
    intro: str
    level: int = 2  # heading level
    always: bool = False  # render the heading even when the namespace exports nothing yet


NAMESPACES = (
    Section(
        "pp",
        "Preprocessing: `pp`",
        "Validate and normalise an AnnData (or MuData) and match its genes to a model.",
        always=True,
    ),
    Section(
        "tl",
        "Tools: `tl`",
        "Annotate, embed, predict metadata and generate cells with a model. Results go to `obs`/`obsm` "
        "and the parameters to `uns[key_added]`, as in Scanpy.",
        always=True,
    ),
    Section("pl", "Plotting: `pl`", "Plots of the results of the tools.", always=True),
    Section("datasets", "Datasets", "Small data sets for tutorials, tests and benchmarks.", always=True),
)
MODEL = Section(
    "model",
    "Model",
    "The model class (training, fine-tuning, save and load, inference), pretrained checkpoints and the vocabulary.",
)
LOWER_LAYERS = (
    Section("vocab", "Vocabulary: `vocab`", "Entities, their ids and fields.", level=3),
    Section("sentence", "C-sentences: `sentence`", "Building c-sentences from expression rows.", level=3),
    Section("nn", "Network: `nn`", "The transformer as a plain `torch.nn.Module`.", level=3),
    Section("train", "Training: `train`", "The Lightning training plan.", level=3),
    Section("hub", "Checkpoints: `hub`", "Pretrained registry, legacy import and safetensors.", level=3),
    Section("model", "Model parts: `model`", "What the model's recipes receive, and calibration.", level=3),
)
LOWER_INTRO = (
    "The layers under the user API, for building on scmulan (data flows from top to bottom). "
    "Most users need none of them."
)


def documented_members(fullname: str, names: list[str]) -> list[str]:
    """The members of class ``fullname`` that its page documents (used by ``_templates/autosummary/class.rst``).

    Those defined in scmulan (by the class or a scmulan base class or mixin), and the few of
    :data:`INHERITED_DOCUMENTED`; not the rest of what a class inherits from another package.
    """
    module_name, _, qualname = fullname.rpartition(".")
    cls = getattr(importlib.import_module(module_name), qualname, None)
    if not inspect.isclass(cls):
        return list(names)
    documented = []
    for name in names:
        owner = next((klass for klass in cls.__mro__ if name in vars(klass)), None)
        if owner is None or owner.__module__.split(".")[0] == PACKAGE or name in INHERITED_DOCUMENTED:
            documented.append(name)
    return documented


def _not_written(err: ModuleNotFoundError) -> bool:
    """Whether ``err`` is about a scmulan module whose file does not exist (yet), found without importing."""
    if err.name is None or not (err.name == PACKAGE or err.name.startswith(PACKAGE + ".")):
        return False
    root = Path(importlib.util.find_spec(PACKAGE).origin).parent
    path = root.joinpath(*err.name.split(".")[1:])
    return not (path.with_suffix(".py").is_file() or (path / "__init__.py").is_file())


def _import_if_written(modname: str) -> types.ModuleType | None:
    """Import ``modname``; ``None`` if it, or a scmulan module it imports, does not exist yet."""
    try:
        return importlib.import_module(modname)
    except ModuleNotFoundError as err:
        if _not_written(err):
            logger.info("[api_lists] skipped %s: module %s does not exist yet", modname, err.name)
            return None
        raise


def _exported(module: types.ModuleType) -> list[str]:
    """Names of ``module.__all__`` that resolve, warning about those that do not."""
    if not hasattr(module, "__all__"):
        names = [
            name
            for name, obj in vars(module).items()
            if not name.startswith("_")
            and (inspect.isclass(obj) or inspect.isfunction(obj))
            and getattr(obj, "__module__", "").startswith(module.__name__)
        ]
        logger.info("[api_lists] %s has no __all__: listing its public classes and functions", module.__name__)
        return sorted(names)
    names = []
    for name in module.__all__:
        try:
            obj = getattr(module, name)
        except ModuleNotFoundError as err:
            if _not_written(err):
                logger.info("[api_lists] skipped %s.%s: module %s does not exist yet", module.__name__, name, err.name)
                continue
            raise
        except AttributeError:
            if module.__name__ == PACKAGE:  # a lazily imported name whose module is still being written
                logger.info("[api_lists] skipped %s.%s: it does not resolve yet", PACKAGE, name)
            else:
                logger.warning("[api_lists] %s.__all__ lists %r, which does not exist", module.__name__, name)
            continue
        if isinstance(obj, types.ModuleType) or (module.__name__ == PACKAGE and name in TOP_LEVEL_EXCLUDED):
            continue
        names.append(name)
    return names


def _block(
    section: Section, module: str | None, entries: list[str], *, current: str = PACKAGE, note: str | None = None
) -> str:
    lines = [f"{'#' * section.level} {section.title}", "", section.intro, ""]
    rst = [f".. module:: {module}"] if module else []
    if entries:
        rst += [f".. currentmodule:: {current}", "", ".. autosummary::", f"   :toctree: {STUB_DIR}", ""]
        rst += [f"   {entry}" for entry in entries]
    if rst:
        lines += ["```{eval-rst}", *rst, "```", ""]
    if note:
        lines += [note, ""]
    return "\n".join(lines)


def render_fragments() -> dict[str, str]:
    """The text of every fragment, keyed by section (an empty text hides the section)."""
    package = importlib.import_module(PACKAGE)
    fragments = {}
    for section in NAMESPACES:
        module = _import_if_written(f"{PACKAGE}.{section.key}")
        names = _exported(module) if module is not None else []
        if module is None and not section.always:
            fragments[section.key] = ""
            continue
        entries = [f"{section.key}.{name}" for name in names]
        note = None if entries else "*Nothing here yet: this part of the package is in progress.*"
        fragments[section.key] = _block(section, module.__name__ if module else None, entries, note=note)

    top = _exported(package)
    fragments[MODEL.key] = _block(MODEL, None, top) if top else ""
    top_objects = [getattr(package, name) for name in top]

    # Lower layers: names relative to their module (so that short references in summaries resolve there),
    # leaving out what the top level re-exports (documented once, under its public path).
    parts = []
    for section in LOWER_LAYERS:
        module = _import_if_written(f"{PACKAGE}.{section.key}")
        if module is None:
            continue
        names = [name for name in _exported(module) if not any(getattr(module, name) is o for o in top_objects)]
        parts.append(_block(section, module.__name__, names, current=module.__name__))
    fragments["lower"] = "\n".join(["## Lower layers", "", LOWER_INTRO, "", *parts]) if parts else ""
    return fragments


def _write_if_changed(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def generate(app: Sphinx) -> None:
    """Write the fragments and their autosummary stub pages; remove stale stubs."""
    from sphinx.ext.autosummary import get_rst_suffix
    from sphinx.ext.autosummary.generate import generate_autosummary_docs

    srcdir = Path(app.srcdir)
    fragment_dir = srcdir / FRAGMENT_DIR
    fragment_dir.mkdir(parents=True, exist_ok=True)
    fragments = render_fragments()
    for key, text in fragments.items():
        _write_if_changed(fragment_dir / f"{key}.md", text)
    for stale in set(fragment_dir.glob("*.md")) - {fragment_dir / f"{key}.md" for key in fragments}:
        stale.unlink()

    stub_dir = srcdir / STUB_DIR
    sources = [str(fragment_dir / f"{key}.md") for key, text in fragments.items() if "autosummary::" in text]
    # The class template asks documented_members() which members to show. It is passed for this call only:
    # a function in a config value would make Sphinx warn that the config cannot be cached.
    context = app.config.autosummary_context
    app.config.autosummary_context = {**context, "documented_members": documented_members}
    try:
        generated = generate_autosummary_docs(
            sources,
            output_dir=stub_dir,
            suffix=get_rst_suffix(app) or ".rst",
            base_path=srcdir,
            app=app,
            imported_members=app.config.autosummary_imported_members,
            overwrite=app.config.autosummary_generate_overwrite,
            encoding=app.config.source_encoding,
        )
    finally:
        app.config.autosummary_context = context
    current = {Path(path) for path in generated}
    for stub in stub_dir.glob(f"{PACKAGE}.*.rst"):
        if stub not in current:
            stub.unlink()


def setup(app: Sphinx) -> dict[str, object]:
    """Register the hook; it runs before autosummary's own stub generation."""
    app.setup_extension("sphinx.ext.autosummary")
    app.connect("builder-inited", generate, priority=400)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
