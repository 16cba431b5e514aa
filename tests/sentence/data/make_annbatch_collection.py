"""Write ``annbatch_atlas.zarr.zip``: a small synthetic atlas as an annbatch collection, by annbatch's own writer.

annbatch needs Python >= 3.12 and scmulan's test environment may be older, so the collection is committed next to
this script; ``tests/sentence/test_annbatch.py`` reads it and, where annbatch is installed, also writes a new one.
Run with an environment that has annbatch (torch is not needed: ``scmulan.datasets`` does not import it):

    PYTHONPATH=src python3.12 tests/sentence/data/make_annbatch_collection.py
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
#: The atlas and the collection's layout; the test draws the same atlas to compare.
ATLAS = {"n_cells": 120, "n_genes": 160, "seed": 1}
COLLECTION = {"dataset_size": 50, "shuffle_chunk_size": 10, "n_obs_per_chunk": 16, "shard_size": 32}


def write_collection(h5ad: Path, out: Path, seed: int = 0) -> Path:
    """``h5ad`` written as a shuffled annbatch collection at ``out`` (a ``.zarr`` folder)."""
    from annbatch import DatasetCollection

    DatasetCollection(out).add_adatas([h5ad], shuffle=True, rng=np.random.default_rng(seed), **COLLECTION)
    return out


def main() -> None:
    import scmulan.datasets

    atlas = scmulan.datasets.synthetic_atlas(**ATLAS)
    del atlas.uns["synthetic_atlas"]
    with tempfile.TemporaryDirectory() as tmp:
        h5ad = Path(tmp) / "atlas.h5ad"
        atlas.write_h5ad(h5ad)
        folder = write_collection(h5ad, Path(tmp) / "annbatch_atlas.zarr")
        target = HERE / "annbatch_atlas.zarr.zip"
        with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(folder.parent).as_posix())
        shutil.rmtree(folder)
    print(f"wrote {target} ({target.stat().st_size / 1024:.0f} KiB) with annbatch {_version()}", file=sys.stderr)


def _version() -> str:
    from importlib.metadata import version

    return version("annbatch")


if __name__ == "__main__":
    main()
