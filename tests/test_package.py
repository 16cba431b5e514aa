"""Package-level checks: fast import, version, public namespaces and Scanpy-style signatures.

The structure tests iterate over each namespace's ``__all__``: they hold for an empty namespace and check
every public function as it lands.
"""

import importlib
import importlib.metadata
import inspect
import json
import subprocess
import sys
import types
import typing

import pytest
from anndata import AnnData
from mudata import MuData

import scmulan

PUBLIC_NAMESPACES = ["pp", "tl", "pl", "datasets"]
HEAVY_MODULES = ["torch", "lightning", "pytorch_lightning", "scvi"]
#: tl functions whose first parameter is the model rather than the data (they create cells).
FIRST_PARAM_MODEL = {"tl.generate", "tl.perturb"}  # they read no cells: they make them
MAX_POSITIONAL = 3


def _public_functions(namespace: str) -> list[tuple[str, types.FunctionType]]:
    module = importlib.import_module(f"scmulan.{namespace}")
    return [
        (f"{namespace}.{name}", getattr(module, name))
        for name in module.__all__
        if inspect.isfunction(inspect.unwrap(getattr(module, name)))
    ]


def _first_annotation(fn: types.FunctionType) -> object:
    """The first parameter's annotation, evaluated also when AnnData/MuData are imported under TYPE_CHECKING."""
    annotation = next(iter(inspect.signature(fn).parameters.values())).annotation
    if isinstance(annotation, str):
        namespace = {**inspect.unwrap(fn).__globals__, "AnnData": AnnData, "MuData": MuData}
        annotation = eval(annotation, namespace)  # the package's own annotation text
    return annotation


def _data_types(annotation: object) -> set[type]:
    """The classes a (possibly union) annotation admits."""
    if typing.get_origin(annotation) in {typing.Union, types.UnionType}:
        return {t for arg in typing.get_args(annotation) for t in _data_types(arg)}
    return {annotation} if isinstance(annotation, type) else set()


SCANPY_STYLE = [pytest.param(name, fn, id=name) for ns in ["pp", "tl"] for name, fn in _public_functions(ns)]


def test_import_does_not_load_heavy_dependencies():
    code = f"import json, sys; import scmulan; print(json.dumps([m for m in {HEAVY_MODULES!r} if m in sys.modules]))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded == [], f"`import scmulan` imported {loaded}; import them inside the functions that need them"


def test_version_matches_metadata():
    assert scmulan.__version__ == importlib.metadata.version("scmulan")


@pytest.mark.parametrize("namespace", PUBLIC_NAMESPACES)
def test_namespace_all_names_exist(namespace):
    module = importlib.import_module(f"scmulan.{namespace}")
    assert isinstance(module.__all__, list | tuple), f"scmulan.{namespace}.__all__ must be a list"
    assert len(set(module.__all__)) == len(module.__all__), f"duplicates in scmulan.{namespace}.__all__"
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == [], f"scmulan.{namespace}.__all__ lists names that do not exist: {missing}"
    assert namespace in scmulan.__all__


@pytest.mark.parametrize(("name", "fn"), SCANPY_STYLE)
def test_first_parameter_is_the_data(name, fn):
    params = list(inspect.signature(fn).parameters.values())
    assert params, f"{name} takes no parameters"
    first = params[0]
    if name in FIRST_PARAM_MODEL:
        assert first.name == "model", f"{name}: the first parameter should be `model`"
        return
    assert first.name == "adata", f"{name}: the first parameter should be `adata`, not {first.name!r}"
    admitted = _data_types(_first_annotation(fn))
    assert AnnData in admitted, f"{name}: `adata` should be annotated as AnnData (or AnnData | MuData)"
    extra = admitted - {AnnData, MuData}
    assert not extra, f"{name}: `adata` admits {extra}, beyond AnnData and MuData"


@pytest.mark.parametrize(("name", "fn"), SCANPY_STYLE)
def test_copy_is_keyword_only_and_false(name, fn):
    params = inspect.signature(fn).parameters
    if "copy" not in params:
        pytest.skip(f"{name} has no `copy` parameter")
    copy = params["copy"]
    assert copy.kind is inspect.Parameter.KEYWORD_ONLY, f"{name}: `copy` should be keyword-only"
    assert copy.default is False, f"{name}: `copy` should default to False"


@pytest.mark.parametrize(("name", "fn"), SCANPY_STYLE)
def test_few_positional_parameters(name, fn):
    positional = [
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.kind in {inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD}
    ]
    assert len(positional) <= MAX_POSITIONAL, (
        f"{name} takes {len(positional)} positional parameters {positional}; put options after `*`"
    )
