from __future__ import annotations

import importlib.util
import io
import json
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scmulan.vocab import UnknownTokenError, Vocabulary


def _load_paths():
    name = "scmulan_tests_paths"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("_paths.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_paths = _load_paths()

# ---------------------------------------------------------------------------- legacy vocabulary

# The original layout (scmulan-original.md §1.1): (first id, last id, primary field).
LEGACY_BLOCKS = [
    (0, 0, "special"),
    (1, 2000, "gene"),
    (2001, 2007, "organ"),
    (2008, 2121, "cell type"),  # cell_type if a fine label, else coarse_cell_type
    (2122, 2154, "age"),
    (2155, 2160, "disease"),
    (2161, 2193, "region"),
    (2194, 2203, "technology"),
    (2204, 2205, "sex"),
    (2206, 2206, "task"),
    (2207, 2221, "task"),
]
LEGACY_FIELD_SIZES = {
    "organ": 7,
    "coarse_cell_type": 29,
    "cell_type": 109,
    "sex": 3,
    "age": 34,
    "region": 39,
    "technology": 10,
    "disease": 7,
}
LEGACY_KEYS = {
    "organ": "organ",
    "region": "region",
    "coarse_cell_type": "MCT",
    "cell_type": "cell_type",
    "sex": "donor_gender",
    "age": "age_bin",
    "technology": "seq_tech",
    "disease": "sample_status",
}


@pytest.fixture(scope="module")
def parity_dir() -> Path:
    return _paths.require_legacy_parity_dir()


@pytest.fixture(scope="module")
def meta(parity_dir) -> dict:
    return json.loads((parity_dir / "meta_info.json").read_text())


@pytest.fixture(scope="module")
def legacy(parity_dir) -> Vocabulary:
    return Vocabulary.from_legacy_meta_info(parity_dir / "meta_info.pt")


def test_legacy_block_counts(legacy, meta):
    assert [last - first + 1 for first, last, _ in LEGACY_BLOCKS] == [1, 2000, 7, 114, 33, 6, 33, 10, 2, 1, 15]
    assert len(legacy) == 2222 == sum(last - first + 1 for first, last, _ in LEGACY_BLOCKS)
    fine = set(meta["cell_type"])
    for first, last, block in LEGACY_BLOCKS:
        for i in range(first, last + 1):
            field, category = legacy.token(i)
            if block == "cell type":
                assert field == ("cell_type" if category in fine else "coarse_cell_type"), i
            else:
                assert field == block, (i, field, category)


def test_legacy_ids_are_token_set_indices(legacy, meta):
    renamed = {"<PCT>": "<annotate>", "<SPToken1>": "<generate>", "<SPToken3>": "<metadata>"}
    assert len(meta["token_set"]) == len(legacy)
    for i, tok in enumerate(meta["token_set"]):
        field, category = legacy.token(i)
        assert category == renamed.get(tok, tok)
        assert legacy.token_id(field, category) == i
        assert legacy.token_id(field, tok) == i  # the original name resolves too


def test_legacy_field_sizes(legacy, meta):
    assert legacy.metadata_fields == list(Vocabulary.METADATA_FIELDS)
    assert legacy.fields == ["special", "task", "gene", *Vocabulary.METADATA_FIELDS]
    for field, size in LEGACY_FIELD_SIZES.items():
        ids = legacy.field_ids(field)
        cats = legacy.categories(field)
        assert len(ids) == len(cats) == size, field
        assert ids.dtype == np.int64
        assert np.all(np.diff(ids) > 0)
        assert set(cats) == set(meta[LEGACY_KEYS[field]]), field
        assert [legacy.token_id(field, c) for c in cats] == ids.tolist()
    assert legacy.categories("sex") == ["Unclassified", "F", "M"]
    assert legacy.field_ids("sex").tolist() == [2010, 2204, 2205]
    assert len(legacy.field_ids("task")) == 16
    assert len(legacy.field_ids("special")) == 1
    # the 24 labels shared by MCT and cell_type, and the 5 MCT-only ones
    shared = set(legacy.categories("coarse_cell_type")) & set(legacy.categories("cell_type"))
    assert len(shared) == 24
    assert set(legacy.categories("coarse_cell_type")) - shared == {
        "Cell",
        "Alveolar cell",
        "Neuroglial cell",
        "Myeloid cell",
        "Common myeloid progenitor (CMP)",
    }
    assert len(set(legacy.field_ids("coarse_cell_type")) | set(legacy.field_ids("cell_type"))) == 114


def test_legacy_quoted_ids(legacy):
    assert legacy.token_id("organ", "Lung") == 2001
    assert legacy.token_id("organ", "Blood") == 2004
    assert legacy.token(2004) == ("organ", "Blood")
    assert legacy.token(2010) == ("cell_type", "Unclassified")
    for field in ("cell_type", "coarse_cell_type", "region", "sex", "age", "disease"):
        assert legacy.token_id(field, "Unclassified") == 2010, field
    for field in ("organ", "technology"):
        with pytest.raises(KeyError):
            legacy.token_id(field, "Unclassified")
    for name in ("Bone marrow", "Brain", "Liver", "Lung", "Thymus"):
        assert legacy.token_id("region", name) == legacy.token_id("organ", name)
        assert legacy.token(legacy.token_id("region", name))[0] == "organ"
    assert legacy.token_id("sex", "F") == 2204
    assert legacy.token_id("sex", "M") == 2205


def test_legacy_tasks(legacy):
    assert legacy.token(2206) == ("task", "<annotate>")
    assert legacy.token(2207) == ("task", "<generate>")
    assert legacy.token(2208) == ("task", "<SPToken2>")
    assert legacy.token(2209) == ("task", "<metadata>")
    assert legacy.token(2221) == ("task", "<SPToken15>")
    assert legacy.token_id("task", "<PCT>") == legacy.token_id("task", "<annotate>") == 2206
    assert legacy.task_id("<PCT>") == legacy.task_id("<annotate>") == legacy.task_id("annotation") == 2206
    assert legacy.task_id("<SPToken1>") == legacy.task_id("<generate>") == 2207
    assert legacy.task_id("<SPToken3>") == legacy.task_id("<metadata>") == 2209
    assert legacy.task_id("<SPToken2>") == 2208
    assert legacy.categories("task")[:4] == ["<annotate>", "<generate>", "<SPToken2>", "<metadata>"]
    with pytest.raises(KeyError, match="SPToken15"):
        legacy.task_id("<SPToken16>")


def test_legacy_specials_and_genes(legacy, meta):
    assert legacy.is_legacy
    assert legacy.end_id == 0
    assert legacy.pad_id == legacy.end_id
    assert legacy.token(0) == ("special", "<E>")
    with pytest.raises(KeyError):
        legacy.token_id("special", "<PAD>")
    assert legacy.genes == meta["gene_set"]
    np.testing.assert_array_equal(legacy.gene_ids, np.arange(1, 2001))
    assert legacy.gene_index()["A2M"] == 1
    assert legacy.token_ids("gene", ["ZNF831", "A2M"]).tolist() == [2000, 1]


def test_legacy_pt_equals_json(legacy, parity_dir, meta):
    from_json = Vocabulary.from_legacy_meta_info(parity_dir / "meta_info.json")
    assert from_json == legacy
    assert Vocabulary.from_legacy_meta_info(meta) == legacy
    assert Vocabulary.from_legacy_meta_info(str(parity_dir / "meta_info.pt")) == legacy


def test_legacy_pt_matches_torch_load(legacy, parity_dir):
    torch = pytest.importorskip("torch")
    raw = torch.load(parity_dir / "meta_info.pt", weights_only=True)
    assert isinstance(raw["organ"], set)
    assert Vocabulary.from_legacy_meta_info(raw) == legacy


def test_legacy_load_imports_no_torch(parity_dir):
    code = (
        "import sys; from scmulan.vocab import Vocabulary; "
        f"v = Vocabulary.from_legacy_meta_info({str(parity_dir / 'meta_info.pt')!r}); "
        "assert len(v) == 2222; assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_legacy_field_masks(legacy):
    masks = {f: legacy.field_mask(f) for f in legacy.fields}
    union = np.logical_or.reduce(list(masks.values()))
    assert union.all()
    assert masks["gene"].sum() == 2000
    assert not (masks["gene"] & masks["organ"]).any()
    assert (masks["organ"] & masks["region"]).sum() == 5
    for field, mask in masks.items():
        assert mask.shape == (2222,)
        np.testing.assert_array_equal(np.flatnonzero(mask), legacy.field_ids(field))


def test_legacy_round_trip(legacy, tmp_path):
    assert Vocabulary.from_dict(legacy.to_dict()) == legacy
    path = tmp_path / "vocab.json"
    legacy.save(path)
    loaded = Vocabulary.load(path)
    assert loaded == legacy
    assert loaded.is_legacy
    assert loaded.token_id("sex", "Unclassified") == 2010
    assert loaded.task_id("<PCT>") == 2206
    assert loaded.categories("region") == legacy.categories("region")
    assert loaded.pad_id == 0


def test_legacy_extend_keeps_ids(legacy):
    ext = legacy.extend("sex", ["F", "Unknown", "Unclassified"])
    assert len(legacy) == 2222
    assert len(ext) == 2223
    assert ext.token_id("sex", "Unknown") == 2222
    assert ext.token(2222) == ("sex", "Unknown")
    assert ext.is_legacy
    for i in range(len(legacy)):
        assert ext.token(i) == legacy.token(i)
    assert ext.token_id("region", "Liver") == 2006


def test_legacy_repr(legacy):
    text = repr(legacy)
    assert "2222" in text
    assert "legacy" in text
    assert "region=39" in text
    assert "gene=2000" in text


def _write_pt(path: Path, obj) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("meta_info/data.pkl", pickle.dumps(obj, protocol=2))
        zf.writestr("meta_info/version", "3\n")


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_legacy_pt_reader_executes_no_code(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    _write_pt(path, {"token_set": _Evil()})
    with pytest.raises(pickle.UnpicklingError, match=r"__builtin__\.print"):
        Vocabulary.from_legacy_meta_info(path)
    assert "pwned" not in capsys.readouterr().out


def test_legacy_reader_on_tiny_meta(tmp_path):
    meta = {
        "token_set": ["<E>", "G1", "G2", "Liver", "T cell", "Unclassified", "<PCT>", "<SPToken1>", "<SPToken2>"],
        "gene_set": ["G1", "G2"],
        "organ": {"Liver"},
        "region": {"Liver", "Unclassified"},
        "MCT": {"T cell"},
        "cell_type": {"T cell", "Unclassified"},
        "donor_gender": set(),
        "age_bin": set(),
        "seq_tech": set(),
        "sample_status": set(),
        "study_id": {"x"},
    }
    path = tmp_path / "meta_info.pt"
    _write_pt(path, meta)
    vocab = Vocabulary.from_legacy_meta_info(path)
    assert len(vocab) == 9
    assert vocab.token(3) == ("organ", "Liver")
    assert vocab.token(4) == ("cell_type", "T cell")
    assert vocab.token_id("coarse_cell_type", "T cell") == 4
    assert vocab.token_id("region", "Unclassified") == 5
    assert vocab.token(8) == ("task", "<SPToken2>")
    # a label that is not a token, and a token that is nothing known
    with pytest.raises(ValueError, match="not tokens"):
        Vocabulary.from_legacy_meta_info({**meta, "organ": {"Liver", "Heart"}})
    with pytest.raises(ValueError, match="'Mystery'"):
        Vocabulary.from_legacy_meta_info({**meta, "token_set": [*meta["token_set"], "Mystery"]})
    bad = dict(meta)
    del bad["MCT"]
    with pytest.raises(ValueError, match="MCT"):
        Vocabulary.from_legacy_meta_info(bad)
    with pytest.raises(FileNotFoundError):
        Vocabulary.from_legacy_meta_info(tmp_path / "nope.pt")


def test_import_does_not_import_torch():
    code = "import sys, scmulan.vocab; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_parity_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv(_paths.PARITY_ENV, str(tmp_path))
    assert _paths.legacy_parity_dir() == tmp_path
    monkeypatch.delenv(_paths.PARITY_ENV)
    found = _paths.legacy_parity_dir()
    assert found is None or (found / "meta_info.pt").is_file()


# ---------------------------------------------------------------------------- new vocabularies

GENES = ["CD3E", "MS4A1", "LYZ", "NKG7"]
METADATA = {
    "batch": ["b2", "b1", "b2"],  # extra field, given first
    "cell_type": ["T cell", "B cell", "T cell", "Monocyte"],
    "organ": ["Blood", "Liver"],
    "region": ["Liver", "PBMC"],
    "age": [30, 40],
}


@pytest.fixture
def vocab() -> Vocabulary:
    return Vocabulary.build(GENES, METADATA)


def test_build_layout(vocab):
    assert vocab.token(0) == ("special", "<E>")
    assert vocab.token(1) == ("special", "<PAD>")
    assert vocab.end_id == 0
    assert vocab.pad_id == 1
    assert [vocab.token(i) for i in range(2, 5)] == [("task", t) for t in Vocabulary.TASKS]
    assert vocab.token(5) == ("task", "<reserved1>")
    assert vocab.token(17) == ("task", "<reserved13>")
    assert vocab.genes == GENES
    assert vocab.gene_ids.tolist() == [18, 19, 20, 21]
    assert vocab.metadata_fields == ["organ", "region", "cell_type", "age", "batch"]
    assert vocab.fields == ["special", "task", "gene", "organ", "region", "cell_type", "age", "batch"]
    assert vocab.categories("organ") == ["Blood", "Liver"]
    assert vocab.field_ids("organ").tolist() == [22, 23]
    assert vocab.categories("cell_type") == ["T cell", "B cell", "Monocyte"]
    assert vocab.categories("age") == ["30", "40"]
    assert vocab.categories("batch") == ["b2", "b1"]
    assert len(vocab) == 18 + 4 + 2 + 2 + 3 + 2 + 2
    assert not vocab.is_legacy
    # separate namespaces: the organ and region "Liver" are two tokens
    assert vocab.token_id("organ", "Liver") != vocab.token_id("region", "Liver")


def test_build_n_reserved():
    vocab = Vocabulary.build(["A"], n_reserved=0)
    assert len(vocab) == 6
    assert vocab.gene_ids.tolist() == [5]
    assert vocab.categories("task") == list(Vocabulary.TASKS)
    assert vocab.metadata_fields == []
    with pytest.raises(ValueError, match="n_reserved"):
        Vocabulary.build(["A"], n_reserved=-1)


def test_build_same_vocab_is_equal():
    assert Vocabulary.build(GENES, METADATA) == Vocabulary.build(list(GENES), dict(METADATA))
    assert Vocabulary.build(GENES, METADATA) != Vocabulary.build(GENES[::-1], METADATA)
    assert Vocabulary.build(GENES) != "not a vocabulary"


@pytest.mark.parametrize(
    ("genes", "metadata", "match"),
    [
        (["A", "B", "A"], None, r"duplicated.*'A'"),
        ([], None, "empty"),
        ("ABC", None, "sequence of strings"),
        (["A", None], None, "missing value"),
        (["A", ""], None, "empty string"),
        (["A"], {"organ": ["Liver", None]}, r"metadata\['organ'\].*missing value"),
        (["A"], {"organ": ["Liver", np.nan]}, "missing value"),
        (["A"], {"organ": ["Liver", pd.NA]}, "missing value"),
        (["A"], {"organ": ["Liver", "nan"]}, "missing value"),
        (["A"], {"organ": ["Liver", "  "]}, "empty string"),
        (["A"], {"organ": "Liver"}, "sequence of strings"),
        (["A"], {"gene": ["x"]}, "reserved field name"),
        (["A"], {"": ["x"]}, "non-empty string"),
        (["A"], [("organ", ["x"])], "mapping"),
    ],
)
def test_build_errors(genes, metadata, match):
    with pytest.raises(ValueError, match=match):
        Vocabulary.build(genes, metadata)


def test_token_id_errors(vocab):
    with pytest.raises(KeyError, match=r"unknown field 'tissue'.*'organ'"):
        vocab.token_id("tissue", "Liver")
    with pytest.raises(UnknownTokenError) as info:
        vocab.token_id("cell_type", "T-cell")
    text = str(info.value)
    assert "'cell_type'" in text
    assert "'T-cell'" in text
    assert "'B cell'" in text  # examples of valid ones
    assert "did you mean ['T cell'" in text
    assert vocab.token_id("age", 30) == vocab.token_id("age", "30")
    with pytest.raises(IndexError, match="out of range"):
        vocab.token(len(vocab))
    with pytest.raises(IndexError):
        vocab.token(-1)
    assert vocab.token(np.int64(0)) == ("special", "<E>")


def test_token_ids(vocab):
    ids = vocab.token_ids("organ", ["Liver", "Blood", "Liver"])
    assert ids.dtype == np.int64
    assert ids.tolist() == [23, 22, 23]
    assert vocab.token_ids("organ", pd.Series(["Blood", "Liver"], dtype="category")).tolist() == [22, 23]
    assert vocab.token_ids("organ", np.array([["Blood"], ["Liver"]])).shape == (2, 1)
    empty = vocab.token_ids("organ", [])
    assert empty.shape == (0,)
    assert empty.dtype == np.int64
    out = vocab.token_ids("organ", ["Liver", "Heart", None, "Lung", "Heart"], missing=-1)
    assert out.tolist() == [23, -1, -1, -1, -1]
    assert vocab.token_ids("age", [30, "40"]).tolist() == [vocab.token_id("age", "30"), vocab.token_id("age", "40")]
    with pytest.raises(UnknownTokenError, match=r"2 unknown 'organ' categories: \['Heart', 'Lung'\]"):
        vocab.token_ids("organ", ["Liver", "Heart", "Lung", "Heart"])
    with pytest.raises(KeyError, match="1 missing value"):
        vocab.token_ids("organ", ["Liver", None])
    with pytest.raises(KeyError, match=r"unknown gene\(s\): \['GAPDH'\]"):
        vocab.token_ids("gene", ["CD3E", "GAPDH"])
    with pytest.raises(ValueError, match="token_id"):
        vocab.token_ids("organ", "Liver")


def test_tasks(vocab):
    assert vocab.task_id("<generate>") == 2
    assert vocab.task_id("<annotate>") == vocab.task_id("<PCT>") == vocab.task_id("annotation") == 3
    assert vocab.task_id("<metadata>") == vocab.task_id("<SPToken3>") == vocab.task_id("metadata") == 4
    assert vocab.task_id("<SPToken1>") == vocab.task_id("generation") == 2
    assert vocab.task_id("<reserved2>") == 6
    with pytest.raises(KeyError, match=r"unknown task '<SPToken2>'.*<reserved13>"):
        vocab.task_id("<SPToken2>")


def test_field_masks_partition(vocab):
    masks = [vocab.field_mask(f) for f in vocab.fields]
    assert sum(int(m.sum()) for m in masks) == len(vocab)
    np.testing.assert_array_equal(np.sum(masks, axis=0), np.ones(len(vocab)))
    for field in vocab.fields:
        mask = vocab.field_mask(field)
        assert mask.dtype == bool
        np.testing.assert_array_equal(np.flatnonzero(mask), vocab.field_ids(field))
        assert len(vocab.categories(field)) == mask.sum()
    with pytest.raises(KeyError, match="unknown field"):
        vocab.field_mask("tissue")


def test_returned_arrays_and_dicts_are_copies(vocab):
    ids = vocab.field_ids("gene")
    ids[:] = 0
    assert vocab.gene_ids.tolist() == [18, 19, 20, 21]
    index = vocab.gene_index()
    assert index == {"CD3E": 18, "MS4A1": 19, "LYZ": 20, "NKG7": 21}
    index["CD3E"] = 99
    assert vocab.token_id("gene", "CD3E") == 18
    vocab.genes.append("X")
    assert vocab.genes == GENES


def test_round_trip(vocab, tmp_path):
    d = vocab.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert Vocabulary.from_dict(d) == vocab
    path = tmp_path / "vocab.json"
    vocab.save(path)
    loaded = Vocabulary.load(path)
    assert loaded == vocab
    assert loaded.metadata_fields == vocab.metadata_fields
    assert loaded.categories("batch") == ["b2", "b1"]
    assert repr(loaded) == repr(vocab)
    unicode = Vocabulary.build(["A"], {"region": ["Zürich", "東京"]})
    buffer = tmp_path / "unicode.json"
    unicode.save(buffer)
    assert Vocabulary.load(buffer) == unicode


def test_from_dict_errors(vocab):
    with pytest.raises(ValueError, match="format"):
        Vocabulary.from_dict({"tokens": []})
    with pytest.raises(ValueError, match="version"):
        Vocabulary.from_dict({**vocab.to_dict(), "version": 99})
    with pytest.raises(ValueError, match="malformed"):
        Vocabulary.from_dict({**vocab.to_dict(), "tokens": [["gene"]]})
    with pytest.raises(ValueError, match="given twice"):
        Vocabulary.from_dict({**vocab.to_dict(), "aliases": [["organ", "Blood", 23]]})
    with pytest.raises(ValueError, match="crosses token kinds"):
        Vocabulary.from_dict({**vocab.to_dict(), "aliases": [["organ", "CD3E", 18]]})
    with pytest.raises(ValueError, match="end token"):
        Vocabulary([("gene", "A")])


def test_extend(vocab):
    ext = vocab.extend("cell_type", ["B cell", "NK cell", "NK cell", "DC"])
    assert ext is not vocab
    assert len(vocab) == 33
    assert len(ext) == 35
    assert ext.token_id("cell_type", "NK cell") == 33
    assert ext.token_id("cell_type", "DC") == 34
    assert ext.categories("cell_type") == ["T cell", "B cell", "Monocyte", "NK cell", "DC"]
    for i in range(len(vocab)):
        assert ext.token(i) == vocab.token(i)
    assert ext.extend("cell_type", ["DC"]) == ext

    # a new extra field and a new canonical field
    ext2 = ext.extend("donor", ["d1"]).extend("sex", ["F", "M"])
    assert ext2.metadata_fields == ["organ", "region", "cell_type", "sex", "age", "batch", "donor"]
    assert ext2.token(35) == ("donor", "d1")
    assert ext2.field_ids("sex").tolist() == [36, 37]
    assert Vocabulary.from_dict(ext2.to_dict()) == ext2

    genes = vocab.extend("gene", ["GAPDH", "CD3E"])
    assert genes.genes == [*GENES, "GAPDH"]
    assert genes.token_id("gene", "GAPDH") == 33
    assert vocab.extend("task", ["<mytask>"]).task_id("<mytask>") == 33
    with pytest.raises(ValueError, match="special"):
        vocab.extend("special", ["<BOS>"])
    with pytest.raises(ValueError, match="missing value"):
        vocab.extend("organ", [None])


# ---------------------------------------------------------------------------- property test

_names = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=8).filter(
    lambda s: s.strip() != "" and s not in {"nan", "NaN", "<NA>", "NaT"}
)
_fields = st.one_of(st.sampled_from(Vocabulary.METADATA_FIELDS), st.from_regex(r"[a-z_]{1,10}", fullmatch=True)).filter(
    lambda f: f not in {"special", "gene", "task"}
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    genes=st.lists(_names, min_size=1, max_size=30, unique=True),
    metadata=st.dictionaries(_fields, st.lists(_names, max_size=10), max_size=5),
    n_reserved=st.integers(0, 5),
)
def test_build_properties(genes, metadata, n_reserved):
    vocab = Vocabulary.build(genes, metadata, n_reserved=n_reserved)
    for i in range(len(vocab)):
        field, category = vocab.token(i)
        assert vocab.token_id(field, category) == i
    assert len(vocab) == sum(len(vocab.field_ids(f)) for f in vocab.fields)
    assert len(vocab) == 2 + 3 + n_reserved + len(genes) + sum(len(set(c)) for c in metadata.values())
    assert vocab.genes == genes
    for field, cats in metadata.items():
        assert vocab.categories(field) == list(dict.fromkeys(cats))
        np.testing.assert_array_equal(vocab.token_ids(field, cats), [vocab.token_id(field, c) for c in cats])
    assert Vocabulary.from_dict(json.loads(json.dumps(vocab.to_dict()))) == vocab
    buffer = io.StringIO()
    json.dump(vocab.to_dict(), buffer)
    assert Vocabulary.from_dict(json.loads(buffer.getvalue())) == vocab
