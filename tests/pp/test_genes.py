"""Gene identifier kernels behind `scmulan.pp.prepare`: normalisation, alias tables, resolution rules."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scmulan.pp._genes import STATUSES, model_gene_list, normalize_gene_ids, read_aliases, resolve_genes


def test_normalize_gene_ids():
    ids = ["ENSG00000141510.16", "ENSMUSG00000059552.3", "ENSG00000141510", "HLA_A", " CD3E ", None, np.nan, ""]
    out = normalize_gene_ids(ids)
    assert list(out) == ["ENSG00000141510", "ENSMUSG00000059552", "ENSG00000141510", "HLA-A", "CD3E", None, None, None]
    # a dot that is not an Ensembl version stays
    assert list(normalize_gene_ids(["RP11-34P13.7", "AC000061.1"])) == ["RP11-34P13.7", "AC000061.1"]


ALIASES = pd.DataFrame(
    {
        "alias": ["P53", "OLD1", "AMB", "AMB", "CD3E_OLD", "TP53"],
        "symbol": ["TP53", "NEW1", "GENEA", "GENEB", "CD3E", "TP53BP9"],
    }
)


@pytest.mark.parametrize("kind", ["frame", "frame_reordered", "mapping", "csv", "tsv"])
def test_read_aliases_forms(tmp_path, kind):
    if kind == "frame":
        aliases = ALIASES.rename(columns={"alias": "a", "symbol": "s"})  # positional: alias first
    elif kind == "frame_reordered":
        aliases = ALIASES[["symbol", "alias"]].assign(extra=1)  # named columns win over position
    elif kind == "mapping":
        aliases = {"P53": "TP53", "OLD1": "NEW1", "AMB": ["GENEA", "GENEB"], "CD3E_OLD": "CD3E", "TP53": "TP53BP9"}
    else:
        sep = "," if kind == "csv" else "\t"
        aliases = tmp_path / f"aliases.{kind}"
        ALIASES.to_csv(aliases, sep=sep, index=False)
    table = read_aliases(aliases)
    expected = ALIASES.assign(alias=lambda d: d["alias"].str.replace("_", "-"))
    pd.testing.assert_frame_equal(
        table.sort_values(["alias", "symbol"]).reset_index(drop=True),
        expected.sort_values(["alias", "symbol"]).reset_index(drop=True),
    )


def test_read_aliases_errors(tmp_path):
    with pytest.raises(ValueError, match="two columns"):
        read_aliases(pd.DataFrame({"a": ["x"], "b": ["y"], "c": ["z"]}))
    with pytest.raises(ValueError, match="does not exist"):
        read_aliases(tmp_path / "missing.csv")
    with pytest.raises(TypeError, match="`aliases` must be"):
        read_aliases(42)


def test_alias_rules_without_model():
    ids = ["TP53", "P53", "OLD1", "AMB", "NOPE", "CD3E_OLD"]
    res = resolve_genes(ids, None, read_aliases(ALIASES))
    # TP53 is a target symbol: kept, even though it is also an alias of TP53BP9
    # P53 would rename to TP53, which TP53 (an exact, "kept" id) already holds: duplicate
    assert list(res.genes) == ["TP53", None, "NEW1", None, None, "CD3E"]
    assert list(res.status) == ["kept", "duplicate", "renamed", "ambiguous", "unrecognised", "renamed"]


def test_alias_rules_with_model():
    model = ["TP53", "CD3E", "GENEA", "MS4A1"]
    ids = ["P53", "OLD1", "AMB", "cd3e", "TP53BP9", "MS4A1"]
    res = resolve_genes(ids, model, read_aliases(ALIASES))
    # OLD1 -> NEW1 is not a model gene; TP53BP9 is a target symbol but not in the model: both are genes the alias
    # table knows, so "not_in_model"; AMB is ambiguous
    assert list(res.genes) == ["TP53", None, None, "CD3E", None, "MS4A1"]
    assert list(res.status) == ["renamed", "not_in_model", "ambiguous", "case_matched", "not_in_model", "kept"]
    assert res.matched_model_genes == ["TP53", "CD3E", "MS4A1"]
    assert res.examples("renamed") == ["P53->TP53"]


def test_case_insensitive_match_must_be_unique():
    res = resolve_genes(["cd4", "foo"], ["CD4", "Foo", "FOO"])
    assert list(res.genes) == ["CD4", None]
    assert list(res.status) == ["case_matched", "unrecognised"]


def test_model_genes_resolve_in_model_spelling():
    res = resolve_genes(["HLA_A", "ENSG00000141510.2"], ["HLA_A", "ENSG00000141510"])
    assert list(res.genes) == ["HLA_A", "ENSG00000141510"]
    assert list(res.ids) == ["HLA-A", "ENSG00000141510"]


def test_duplicates_prefer_exact_then_first():
    res = resolve_genes(["cd4", "P53", "CD4", "TP53", "TP53"], ["CD4", "TP53"], read_aliases(ALIASES))
    assert list(res.genes) == [None, None, "CD4", "TP53", None]
    assert list(res.status) == ["duplicate", "duplicate", "kept", "kept", "duplicate"]


def test_model_gene_list_forms():
    class Vocab:
        genes = ["A", "B"]

    class Model:
        vocab = Vocab()

    class CallableVocab:
        def genes(self):
            return ["A", "B"]

    for form in (["A", "B"], np.array(["A", "B"]), pd.Index(["A", "B"]), Vocab(), Model(), CallableVocab()):
        genes, description = model_gene_list(form)
        assert genes == ["A", "B"]
        assert "2 genes" in description
    with pytest.raises(ValueError, match="`genes` is empty"):
        model_gene_list([])
    with pytest.raises(ValueError, match="missing values"):
        model_gene_list(["A", None])
    with pytest.raises(TypeError, match="`genes` must be"):
        model_gene_list(3)


_symbols = st.text(alphabet="abAB_-1", min_size=1, max_size=3)


@settings(max_examples=150, deadline=None)
@given(
    ids=st.lists(_symbols, max_size=25),
    model=st.one_of(st.none(), st.lists(_symbols, min_size=1, max_size=15)),
    pairs=st.one_of(st.none(), st.lists(st.tuples(_symbols, _symbols), min_size=1, max_size=10)),
)
def test_a_gene_never_maps_twice(ids, model, pairs):
    aliases = read_aliases(pd.DataFrame(pairs, columns=["alias", "symbol"])) if pairs is not None else None
    res = resolve_genes(ids, model, aliases)
    resolved = [g for g in res.genes if g is not None]
    assert len(resolved) == len(set(resolved))
    assert (pd.notna(res.genes) == np.isin(res.status, STATUSES[:6])).all()
    if model is not None:
        assert set(resolved) <= set(model)
        assert sorted(res.matched_model_genes) == sorted(set(resolved))
