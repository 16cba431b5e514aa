# Configuration of the Sphinx documentation of scmulan. Build with `make docs` from the repository root
# (warnings are errors). What happens at build time, before Sphinx reads any page:
#
# - the c-sentence figure is drawn by `_scripts/make_csentence_figure.py` into `_static/csentence.png`;
# - the tutorials of the repository's top-level `tutorials/` folder are copied into `docs/tutorials/` and
#   executed by myst-nb (a failing cell fails the build); at the end of the build the executed notebooks are stored
#   in `docs/tutorials/_executed/` with the commit they came from (`_ext/tutorial_outputs.py`): commit them;
# - with execution off (on Read the Docs) the stored notebooks are published instead, outputs included, for every
#   tutorial they were executed from; the tutorials page says which commit each one's outputs came from;
# - the API lists of `api.md` are generated from each namespace's `__all__` (`_ext/api_lists.py`);
# - intersphinx falls back to an empty inventory when it cannot download one, and a reference to an
#   external object that a loaded inventory does not list (under its name, a shorter public alias or its
#   defining module's path) is left unlinked instead of failing `-W` (`_ext/xrefs.py`).
#
# Environment variables:
#   SCMULAN_DOCS_EXECUTE=force|cache|off   how tutorials are executed (default: force, every build; off on Read the
#                                          Docs, where READTHEDOCS is set: the stored outputs are published)
#   SCMULAN_DOCS_OFFLINE=1                 do not try to download intersphinx inventories
#   CI                                     set by CI: an executing build warns (so fails) when a stored notebook was
#                                          executed from another version of its tutorial
#
# Time. Executing the tutorials is most of the build. Measured on the project's shared 2-core machine
# (a benchmark and other jobs running, load ~3.5-4), one torch thread per tutorial, on 2026-12-03 (3ec4a8e):
#   01 annotate PBMCs 216 s, 02 pretrain corpus 159 s, 03 generate cells 172 s,
#   04 metadata and embeddings 297 s, 05 original scMulan 20 s (its checks run only where the reference
#   files are, so it is shorter on Read the Docs); whole build 15 min 16 s wall, 10.5 min of CPU.
# The tutorials page publishes the times of each executing build (nb-exec-table), or those stored with the
# outputs. Read the Docs builds the same site (.readthedocs.yaml) without executing the tutorials (its default build
# limit, 15 minutes with the installation, is about what executing them takes): it publishes the stored outputs.
import logging
import os
import sys
import warnings
from datetime import datetime
from importlib.metadata import metadata
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE / "_ext"), str(HERE / "_scripts")]

import tutorial_outputs  # noqa: E402  (local module in _ext/)
import xrefs  # noqa: E402  (local extension in _ext/)

# sphinx-autodoc-typehints 3.6 calls an API that Sphinx 10 removes; that is for its maintainers to fix.
warnings.filterwarnings("ignore", message=".*set_application.* is deprecated", module="sphinx_autodoc_typehints")

# Tutorials run in a Jupyter kernel that inherits this environment. Matplotlib's backend is the inline one
# (no display needed, like Agg, but figures are kept as outputs; an inherited MPLBACKEND=Agg, as .ci/run
# sets, would silently drop every figure of the tutorials). The kernel is that of this virtual environment.
os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
os.environ.setdefault("JUPYTER_PREFER_ENV_PATH", "1")

# -- Project information -----------------------------------------------------------------------------------

info = metadata("scmulan")
project = info["Name"]
author = info["Author"] or info["Author-email"].split("<")[0].strip()
copyright = f"{datetime.now():%Y}, {author}"
version = info["Version"]
release = info["Version"]
urls = dict(url.split(", ", 1) for url in info.get_all("Project-URL") or [])
repository_url = urls.get("Source", "https://github.com/scverse/scmulan")

# -- General configuration ---------------------------------------------------------------------------------

needs_sphinx = "7.0"
extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx_autodoc_typehints",  # after napoleon
    "sphinx_copybutton",
    "sphinx_design",
    "sphinxcontrib.bibtex",
    "api_lists",  # _ext/: the lists of api.md, from each namespace's __all__
    "docstrings",  # _ext/: scverse-style numpydoc (types in signatures only) through napoleon
    "xrefs",  # _ext/: offline intersphinx, public paths, short names in API pages
]
templates_path = ["_templates"]
exclude_patterns = [
    "_build",
    "_ext",
    "_scripts",
    "_templates",
    "generated/api_lists",
    "generated/tutorial_outputs",
    "tutorials/_executed",
    "Thumbs.db",
    ".DS_Store",
    "**.ipynb_checkpoints",
]
default_role = "literal"
nitpicky = True
nitpick_ignore = [
    # References Sphinx cannot resolve and we cannot fix belong here, each with a comment saying why,
    # e.g. ("py:class", "numpy.typing.ArrayLike") for an alias its inventory stores under another role.
    # Private paths of external objects need no entry: `_ext/xrefs.py` retries their public path.
]

# autodoc / autosummary / napoleon / typehints
autosummary_generate = True
autodoc_member_order = "groupwise"
autodoc_default_options = {"show-inheritance": True}
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_include_init_with_doc = False
napoleon_use_rtype = True
napoleon_use_param = True
typehints_defaults = "braces"
typehints_use_rtype = False  # the return type goes into the Returns field
always_use_bars_union = True

# references: cite with {cite:p}`key` in pages, :cite:p:`key` in docstrings; entries in references.bib
bibtex_bibfiles = ["references.bib"]
bibtex_reference_style = "author_year"
bibtex_default_style = "plain"

# intersphinx: keys are top-level import names ("python" is the standard library)
intersphinx_mapping = xrefs.mapping(
    {
        "python": "https://docs.python.org/3",
        "numpy": "https://numpy.org/doc/stable/",
        "pandas": "https://pandas.pydata.org/pandas-docs/stable/",
        "scipy": "https://docs.scipy.org/doc/scipy/",
        "sklearn": "https://scikit-learn.org/stable/",
        "matplotlib": "https://matplotlib.org/stable/",
        "anndata": "https://anndata.readthedocs.io/en/stable/",
        "mudata": "https://mudata.readthedocs.io/en/latest/",
        "scanpy": "https://scanpy.readthedocs.io/en/stable/",
        "torch": "https://docs.pytorch.org/docs/stable/",
        "lightning": "https://lightning.ai/docs/pytorch/stable/",
        "scvi": "https://docs.scvi-tools.org/en/stable/",
        "pooch": "https://www.fatiando.org/pooch/latest/",
    },
    srcdir=HERE,
    offline=os.environ.get("SCMULAN_DOCS_OFFLINE", "") not in {"", "0"},
)
intersphinx_timeout = 30
intersphinx_cache_limit = 0  # re-download on every build, so an offline build's empty fallback is not kept

# MyST and myst-nb
myst_enable_extensions = ["amsmath", "colon_fence", "deflist", "dollarmath", "html_image"]
myst_heading_anchors = 3
# Read the Docs sets READTHEDOCS: it publishes the outputs stored by `make docs` instead of executing (see above).
nb_execution_mode = tutorial_outputs.execution_mode(os.environ)
nb_execution_raise_on_error = True
nb_execution_timeout = 900
nb_execution_in_temp = True  # files written by a tutorial do not land in the source tree
nb_execution_cache_path = str(HERE / "_build" / ".jupyter_cache")
nb_merge_streams = True

# -- HTML output -------------------------------------------------------------------------------------------

html_theme = "sphinx_book_theme"
html_title = project
html_static_path = ["_static"]
html_theme_options = {
    "repository_url": repository_url,
    "use_repository_button": True,
    "path_to_docs": "docs/",
    "navigation_with_keys": False,
}
copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True

# -- Build-time steps --------------------------------------------------------------------------------------

# The c-sentence figure of csentences.md (redrawn when the script is newer than the picture).
figure = HERE / "_static" / "csentence.png"
figure_script = HERE / "_scripts" / "make_csentence_figure.py"
if not figure.is_file() or figure.stat().st_mtime < figure_script.stat().st_mtime:
    import make_csentence_figure

    make_csentence_figure.draw(figure)

# Tutorials: MyST-Markdown notebooks (jupytext front matter with `format_name: myst` and a kernelspec) or
# .ipynb files in the repository's tutorials/ folder are copied into docs/tutorials/ (next to its tracked
# index.md) and executed by myst-nb; copies of removed tutorials are deleted. With execution off, a tutorial's
# stored executed notebook (docs/tutorials/_executed/) is copied instead when it was executed from this source.
TUTORIALS_SRC = ROOT / "tutorials"
TUTORIALS_DST = HERE / "tutorials"
tutorials = sorted(
    p
    for p in [*TUTORIALS_SRC.glob("*.md"), *TUTORIALS_SRC.glob("*.ipynb")]
    if p.name.lower() not in {"index.md", "readme.md"}
)
stored_tutorials = tutorial_outputs.tutorials_of(tutorials, TUTORIALS_DST / tutorial_outputs.STORE)
tutorial_outputs.sync(
    stored_tutorials, TUTORIALS_DST, TUTORIALS_DST / tutorial_outputs.STORE, execute=nb_execution_mode != "off"
)
build_commit, build_dirty = tutorial_outputs.git_commit(ROOT)  # the tutorials page names it
tutorial_outputs.write_fragment(
    HERE,
    tutorial_outputs.provenance_markdown(
        stored_tutorials, execute=nb_execution_mode != "off", commit=build_commit, dirty=build_dirty
    ),
)
if not tutorials:
    # The page says so (`only:: no_tutorials`) instead of showing an empty list.
    tags.add("no_tutorials")  # noqa: F821  (`tags` is provided by Sphinx)


class _NoTutorialsYet(logging.Filter):
    """Drop the warning that the glob toctree of tutorials/index.md matched nothing, while there is nothing.

    Sphinx gives this warning no type, so `suppress_warnings` cannot name it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return bool(tutorials) or "didn't match any documents" not in str(record.msg)


def _rerun_tutorials(app, env, added, changed, removed):
    """Re-read (so re-execute) the tutorials on every build: they test the current code, not a cached run."""
    if app.config.nb_execution_mode == "off":
        return []
    return [f"tutorials/{p.stem}" for p in tutorials if f"tutorials/{p.stem}" not in added | changed]


def setup(app):
    """Per-build hooks of this configuration."""
    app.connect("env-get-outdated", _rerun_tutorials)
    tutorial_outputs.connect(app, stored_tutorials)
    logging.getLogger("sphinx.sphinx.directives.other").addFilter(_NoTutorialsYet())
