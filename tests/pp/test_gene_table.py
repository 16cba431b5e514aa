"""The human gene table: the shipped release, the file formats it reads, and a newer release fetched with pooch from a
local HTTP server on 127.0.0.1 (no other network)."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import json
import threading
from functools import partial
from importlib import resources

import pandas as pd
import pytest

import scmulan
from scmulan.pp import GeneTable
from scmulan.pp._gene_table import SHIPPED_RELEASE, load_gene_table, read_gene_table
from scmulan.pp._genes import resolve_genes


def test_shipped_table_is_small_versioned_and_checked():
    data = resources.files("scmulan.pp") / "data"
    raw = (data / "human_genes.tsv.gz").read_bytes()
    meta = json.loads((data / "human_genes.json").read_text())
    assert len(raw) < 600 * 1024  # a few hundred KB
    assert meta["release"] == SHIPPED_RELEASE == "gencode-v44"
    assert hashlib.sha256(raw).hexdigest() == meta["sha256"]  # the file is the one the build script recorded
    assert "GENCODE v44" in meta["sources"]["g"]
    table = GeneTable.load()
    assert table.release == "gencode-v44"
    assert len(table) == sum(meta["n_rows"].values())
    assert load_gene_table() is table  # read once per process
    assert repr(table).startswith("GeneTable(release='gencode-v44', 45745 genes")


@pytest.mark.parametrize(
    ("key", "expected_ids", "how"),
    [
        ("ENSG00000141510", (141510,), "id"),  # TP53
        ("TP53", (141510,), "g"),
        ("SEPT7", (122545,), "p"),  # the previous symbol of SEPTIN7
        ("SEPTIN7", (122545,), "g"),
        ("ENSG00000000000", (), None),  # well-formed, but no such gene
        ("NOT-A-GENE", (), None),
    ],
)
def test_shipped_table_lookups(key, expected_ids, how):
    table = load_gene_table()
    assert table.ids_of(key) == (expected_ids, how)
    assert table.knows(key) == bool(expected_ids)


def test_shipped_table_names_genes_by_their_gencode_name():
    table = load_gene_table()
    assert table.name_of(141510) == "TP53"
    assert table.name_of(122545) == "SEPTIN7"
    assert table.name_of(1) is None


def test_a_current_symbol_is_never_read_as_an_old_one():
    # a symbol that is one gene's name and another gene's previous symbol names the first gene only
    rows = pd.DataFrame({"ensembl_id": [1, 2, 2], "name": ["ABC", "XYZ", "ABC"], "kind": ["g", "g", "p"]})
    table = GeneTable("test", rows)
    assert table.ids_of("ABC") == ((1,), "g")


def write_gz(path, text: str):
    with gzip.open(path, "wt") as f:
        f.write(text)
    return path


def test_read_formats(tmp_path):
    ours = write_gz(tmp_path / "ours.tsv.gz", "ensembl_id\tname\tkind\nENSG00000000001.3\tNEWNAME\tg\n1\tOLD_NAME\tp\n")
    hgnc = tmp_path / "hgnc_complete_set.txt"
    hgnc.write_text(
        "hgnc_id\tsymbol\tensembl_gene_id\tprev_symbol\talias_symbol\n"
        "HGNC:1\tNEWNAME\tENSG00000000001\tOLD_NAME|OLDER\tNICK\n"
        "HGNC:2\tNOENSEMBL\t\t\t\n"
    )
    two = tmp_path / "gencode.csv"
    two.write_text("ENSG00000000001,NEWNAME\nENSG00000000002,OTHER\n")
    for path in (ours, hgnc, two):
        table = read_gene_table(path)
        assert table.ids_of("NEWNAME") == ((1,), "g")
        assert table.ids_of("ENSG00000000001") == ((1,), "id")
    assert read_gene_table(ours).ids_of("OLD-NAME") == ((1,), "p")  # names are normalised like the data's ids
    assert read_gene_table(hgnc).ids_of("NICK") == ((1,), "a")
    assert not read_gene_table(hgnc).knows("NOENSEMBL")
    assert read_gene_table(two).release == "gencode"


def test_unreadable_tables_name_the_fix(tmp_path):
    truncated = tmp_path / "truncated.tsv.gz"
    full = gzip.compress(b"ensembl_id\tname\tkind\n" + b"1\tA\tg\n" * 2000)
    truncated.write_bytes(full[: len(full) // 2])
    with pytest.raises(ValueError, match="truncated: delete it and download it again"):
        read_gene_table(truncated)
    other = tmp_path / "other.tsv"
    other.write_text("a\tb\tc\n1\t2\t3\n")
    with pytest.raises(ValueError, match=r"Expected scmulan's format \(columns ensembl_id, name, kind\)"):
        read_gene_table(other)
    with pytest.raises(ValueError, match="neither 'gencode-v44'.*an existing file"):
        load_gene_table(tmp_path / "missing.tsv")
    with pytest.raises(TypeError, match="`gene_table` must be"):
        load_gene_table(3)
    good = write_gz(tmp_path / "good.tsv.gz", "ensembl_id\tname\tkind\n1\tA\tg\n")
    with pytest.raises(ValueError, match="not the expected 00"):
        load_gene_table(good, sha256="00" * 32)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A local HTTP server on 127.0.0.1 serving tmp_path/www; counts GET requests."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    root = tmp_path / "www"
    root.mkdir()
    requests: list[str] = []

    class Counting(_Quiet):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Counting, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}", requests
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


# A "newer release": TP53 renamed to TP53NEW (its old name a previous symbol), and a gene the shipped table lacks.
NEWER = "ensembl_id\tname\tkind\n141510\tTP53NEW\tg\n141510\tTP53\tp\n999999\tBRANDNEW\tg\n"


def test_newer_release_is_fetched_once_and_hash_checked(server, tmp_path):
    root, url, requests = server
    file = write_gz(root / "human_genes_v99.tsv.gz", NEWER)
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    table = GeneTable.load(f"{url}/human_genes_v99.tsv.gz", sha256=digest, cache_dir=cache)
    assert table.release == "human_genes_v99"
    assert table.ids_of("ENSG00000999999") == ((999999,), "id")
    assert len(requests) == 1
    again = GeneTable.load(f"{url}/human_genes_v99.tsv.gz", sha256=digest, cache_dir=cache)
    assert len(requests) == 1  # cached: no second download
    assert again.ids_of("TP53NEW") == ((141510,), "g")
    # the newer names reach prepare: an Ensembl id the shipped table lacks, and a renamed model gene
    res = resolve_genes(["ENSG00000999999", "TP53"], ["BRANDNEW", "TP53NEW"], table=table)
    assert list(res.genes) == ["BRANDNEW", "TP53NEW"]
    assert list(res.status) == ["ensembl_id", "previous_symbol"]


def test_fetch_refuses_a_wrong_or_missing_hash(server, tmp_path):
    root, url, _ = server
    write_gz(root / "table.tsv.gz", NEWER)
    with pytest.raises(ValueError, match="failed its SHA-256 check and was rejected"):
        GeneTable.load(f"{url}/table.tsv.gz", sha256="0" * 64, cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("table.tsv.gz"))  # nothing kept
    with pytest.raises(ValueError, match="needs its SHA-256: pass `sha256=`"):
        GeneTable.load(f"{url}/table.tsv.gz", cache_dir=tmp_path / "cache")
    with pytest.raises(OSError, match="Could not download the gene table.*pass its path as `gene_table=`"):
        GeneTable.load(f"{url}/absent.tsv.gz", sha256="0" * 64, cache_dir=tmp_path / "cache")


def test_public_names():
    assert "GeneTable" in scmulan.pp.__all__
    assert GeneTable.load() is load_gene_table(SHIPPED_RELEASE)  # the public entry point reads the same table
