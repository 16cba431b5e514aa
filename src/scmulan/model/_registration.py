"""Registration of AnnData with :class:`~scmulan.SCMULAN`: the metadata fields, the genes, known categories."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
from anndata import AnnData
from scvi.data import AnnDataManager
from scvi.data.fields import LayerField

from scmulan.model._fields import METADATA_KEYS, MetadataObsField, registry_key
from scmulan.vocab import Vocabulary

X_KEY = "X"


def setup_anndata(
    cls: type,
    adata: AnnData,
    layer: str | None = None,
    gene_symbols_key: str | None = None,
    organ_key: str | None = None,
    region_key: str | None = None,
    coarse_cell_type_key: str | None = None,
    cell_type_key: str | None = None,
    sex_key: str | None = None,
    age_key: str | None = None,
    technology_key: str | None = None,
    disease_key: str | None = None,
    extra_metadata_keys: Sequence[str] | None = None,
    **kwargs: Any,
) -> None:
    """Register an AnnData: its log-normalised expression and the ``obs`` columns of each metadata field.

    Missing values (NaN) in a metadata column are allowed: those cells simply do not train the tasks that need
    the value. Registration adds ``obs["_scvi_<key>"]`` code columns and ``uns["_scvi_*"]`` ids, as scvi-tools
    does; nothing else is changed.

    Parameters
    ----------
    adata
        Cells × genes, log-normalised (:func:`scmulan.pp.prepare`).
    layer
        Layer with the expression (``None``: ``X``).
    gene_symbols_key
        ``var`` column with gene symbols when they are not the ``var_names``
        (``var["scmulan_gene"]`` written by :func:`scmulan.pp.prepare` takes precedence).
    organ_key, region_key, coarse_cell_type_key, cell_type_key, sex_key, age_key, technology_key, disease_key
        ``obs`` column of each metadata field (``None``: the field is not used).
    extra_metadata_keys
        Further categorical ``obs`` columns, each its own metadata field (named after the column).
    **kwargs
        Passed to :meth:`scvi.data.AnnDataManager.register_fields`.
    """
    setup_method_args = cls._get_setup_method_args(**locals())
    if adata.n_obs == 0:
        msg = "The AnnData has no cells: there is nothing to register."
        raise ValueError(msg)
    fields: list = [LayerField(X_KEY, layer, is_count_data=False)]
    keys = {
        "organ": organ_key,
        "region": region_key,
        "coarse_cell_type": coarse_cell_type_key,
        "cell_type": cell_type_key,
        "sex": sex_key,
        "age": age_key,
        "technology": technology_key,
        "disease": disease_key,
    }
    for key in list(extra_metadata_keys or []):
        if key in keys:
            msg = f"`extra_metadata_keys` entry {key!r} clashes with a built-in metadata field."
            raise ValueError(msg)
        keys[key] = key
    for field, key in keys.items():
        if key is None:
            continue
        if key not in adata.obs:
            param = METADATA_KEYS.get(field, "extra_metadata_keys")
            msg = f"`{param}={key!r}` is not a column of `adata.obs` (columns: {list(adata.obs.columns)[:20]})."
            raise ValueError(msg)
        fields.append(MetadataObsField(registry_key(field), key))
    if gene_symbols_key is not None and gene_symbols_key not in adata.var:
        msg = f"`gene_symbols_key={gene_symbols_key!r}` is not a column of `adata.var`."
        raise ValueError(msg)
    manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
    manager.register_fields(adata, **kwargs)
    cls.register_manager(manager)


def registered_obs_keys(registry: dict) -> dict[str, str]:
    """Metadata field -> obs column of a registry, canonical fields first (in canonical order), then extras."""
    fields = {}
    for key, value in registry["field_registries"].items():
        if key.startswith("scmulan_"):
            fields[key.removeprefix("scmulan_")] = value["state_registry"]["original_key"]
    canonical = [f for f in Vocabulary.METADATA_FIELDS if f in fields]
    extras = [f for f in fields if f not in Vocabulary.METADATA_FIELDS]
    return {f: fields[f] for f in canonical + extras}


def empty_registry() -> dict[str, Any]:
    """The registry of a model without data (imported or loaded without ``adata``)."""
    import scvi

    return {
        "scvi_version": scvi.__version__,
        "model_name": "SCMULAN",
        "setup_method_name": "setup_anndata",
        "setup_args": {},
        "field_registries": {},
    }


def check_known_categories(vocab: Vocabulary, adata: AnnData, obs_keys: dict[str, str]) -> None:
    """Refuse metadata columns with categories (or fields) the model's vocabulary does not have."""
    for field, key in obs_keys.items():
        if key not in adata.obs:
            continue  # registration names the missing column
        values = adata.obs[key].astype("string").dropna().unique()
        if field not in vocab.fields:
            unknown = sorted(str(v) for v in values)
        else:
            unknown = sorted(str(v) for v in values if not vocab.has_token(field, str(v)))
        if not unknown:
            continue
        msg = (
            f"`SCMULAN.load(dir_path, adata)`: `adata.obs[{key!r}]` ({field!r}) has categories the model does not "
            f"know: {unknown[:5]}{' …' if len(unknown) > 5 else ''}"
        )
        hints = vocab.suggestions(field, unknown[:3]) if field in vocab.fields else {}
        if hints:
            msg += " (did you mean " + "; ".join(f"{c} for {u!r}" for u, c in hints.items()) + "?)"
        msg += (
            ". Load the model without `adata`, then fine-tune with `model.finetune(adata)` to add them to the "
            "vocabulary."
        )
        raise ValueError(msg)


def gene_names(adata: AnnData, gene_symbols: str | None) -> list[str]:
    """The data's gene identifiers (unresolved ones left out).

    From ``var["scmulan_gene"]`` (written by :func:`scmulan.pp.prepare`), else a var column, else the var names.
    """
    if "scmulan_gene" in adata.var:
        names = adata.var["scmulan_gene"].astype("string")
    elif gene_symbols is not None:
        names = adata.var[gene_symbols].astype("string")
    else:
        names = pd.Series(adata.var_names, dtype="string")
    names = names.dropna()
    names = names[names != ""]
    if names.duplicated().any():
        msg = (
            f"{int(names.duplicated().sum())} gene names are duplicated; run `scmulan.pp.prepare(adata)` to resolve "
            "them before building a model."
        )
        raise ValueError(msg)
    if len(names) == 0:
        msg = "The AnnData has no usable gene names."
        raise ValueError(msg)
    return names.tolist()
