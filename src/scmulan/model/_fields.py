"""AnnData fields of :class:`~scmulan.SCMULAN`: a categorical ``obs`` field that allows missing values."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData
from scvi.data.fields import CategoricalObsField

# Metadata field -> `setup_anndata` keyword naming its obs column.
METADATA_KEYS = {
    "organ": "organ_key",
    "region": "region_key",
    "coarse_cell_type": "coarse_cell_type_key",
    "cell_type": "cell_type_key",
    "sex": "sex_key",
    "age": "age_key",
    "technology": "technology_key",
    "disease": "disease_key",
}


def registry_key(field: str) -> str:
    """Registry key of a metadata field (``"scmulan_<field>"``)."""
    return f"scmulan_{field}"


#: Strings that stand for a missing value (what ``.astype(str)`` makes of NaN, None and pd.NA; empty), lower case.
MISSING_STRINGS = frozenset({"nan", "none", "<na>", ""})


def check_missing_strings(obs: pd.DataFrame, key: str) -> None:
    """Refuse a label column holding ``"nan"``, ``"None"``, ``"<NA>"`` or ``""`` strings, naming the fix.

    Parameters
    ----------
    obs
        The cells' metadata.
    key
        The registered column.

    Raises
    ------
    ValueError
        If any cell's label is one of those strings (case and surrounding spaces ignored).
    """
    values = obs[key].astype("string")
    found = values.str.strip().str.lower().isin(MISSING_STRINGS).fillna(False).to_numpy(dtype=bool)
    if not found.any():
        return
    strings = sorted({repr(v) for v in values[found].unique()})
    msg = (
        f"`obs[{key!r}]` holds the label(s) {', '.join(strings)} in {int(found.sum())} cells: what `.astype(str)` "
        f"makes of missing values, not a category. Mark them missing, e.g. `adata.obs[{key!r}] = "
        f"adata.obs[{key!r}].astype('string').replace([{', '.join(strings)}], pd.NA)`; missing labels are allowed "
        "(those cells do not train the tasks that need the label)."
    )
    raise ValueError(msg)


def _codes(obs: pd.DataFrame, key: str, alt_key: str, categories: np.ndarray | None) -> np.ndarray:
    values = obs[key]
    as_str = values.astype("string")  # categories are strings in the vocabulary
    if categories is None:
        categories = np.array(sorted(pd.unique(as_str.dropna())), dtype=object)
    cat = pd.Categorical(as_str, categories=list(categories))
    obs[alt_key] = cat.codes.astype(np.int64)  # -1 where missing
    return np.asarray(categories, dtype=object)


class MetadataObsField(CategoricalObsField):
    """A categorical ``obs`` column whose missing values (NaN/None) are allowed and coded ``-1``.

    The strings ``"nan"``, ``"None"``, ``"<NA>"`` and ``""`` (what ``.astype(str)`` makes of missing values) are
    refused with a :class:`ValueError` naming the fix, rather than learnt as categories.

    A cell without, say, a cell-type label still trains the tasks that do not need it. scvi-tools'
    :class:`~scvi.data.fields.CategoricalObsField` refuses missing values.
    """

    def register_field(self, adata: AnnData) -> dict:
        """Register the column: categories of the non-missing values, codes in ``obs["_scvi_<key>"]``."""
        if self.is_default:
            self._setup_default_attr(adata)
        self.validate_field(adata)
        check_missing_strings(adata.obs, self._original_attr_key)
        mapping = _codes(adata.obs, self._original_attr_key, self.attr_key, None)
        if len(mapping) == 0:
            msg = f"`obs[{self._original_attr_key!r}]` has no non-missing value; remove the key or fill the column."
            raise ValueError(msg)
        return {self.CATEGORICAL_MAPPING_KEY: mapping, self.ORIGINAL_ATTR_KEY: self._original_attr_key}

    def transfer_field(self, state_registry: dict, adata_target: AnnData, extend_categories: bool = False, **kwargs):
        """Register a new AnnData with the same mapping (extended with its new categories if asked)."""
        self.validate_field(adata_target)
        check_missing_strings(adata_target.obs, self._original_attr_key)
        mapping = np.asarray(state_registry[self.CATEGORICAL_MAPPING_KEY], dtype=object)
        values = adata_target.obs[self._original_attr_key].astype("string").dropna()
        new = [c for c in pd.unique(values) if c not in set(mapping)]
        if new and not extend_categories:
            msg = (
                f"`obs[{self._original_attr_key!r}]` has categories the model does not know: {sorted(new)[:5]}. "
                "Fine-tune with `model.finetune(adata)` to add them to the vocabulary."
            )
            raise ValueError(msg)
        mapping = np.concatenate([mapping, np.array(sorted(new), dtype=object)])
        mapping = _codes(adata_target.obs, self._original_attr_key, self.attr_key, mapping)
        return {self.CATEGORICAL_MAPPING_KEY: mapping, self.ORIGINAL_ATTR_KEY: self._original_attr_key}
