"""Snapshot a fixed model's outputs, to check that a refactoring changes no behaviour (bit for bit).

Trains a tiny model with fixed seeds on a synthetic atlas, fine-tunes it on new categories, and records the trained
weights, annotations (constrained, unconstrained, legacy decoding), embeddings, metadata predictions and seeded
generated cells (next-entity and legacy sampling) in one ``.npz``. Run it before and after a change, then compare::

    python scripts/behaviour_snapshot.py write before.npz
    python scripts/behaviour_snapshot.py write after.npz
    python scripts/behaviour_snapshot.py compare before.npz after.npz
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import warnings

import numpy as np


def snapshot() -> dict[str, np.ndarray]:
    """Every output of a fixed trained model, as arrays."""
    import torch

    import scmulan

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    ref = scmulan.datasets.synthetic_atlas(n_cells=400, seed=3)
    scmulan.pp.prepare(ref)
    keys = {"coarse_cell_type_key": "coarse_cell_type", "cell_type_key": "cell_type", "organ_key": "organ"}
    scmulan.SCMULAN.setup_anndata(ref, **keys)
    model = scmulan.SCMULAN(ref, config="tiny", max_length=300)
    model.train(max_epochs=2, batch_size=32, accelerator="cpu", enable_progress_bar=False)
    out: dict[str, np.ndarray] = {"weights_trained": _weights(model)}
    query = ref[:150].copy()
    frame, emb = model.annotate(query, return_embedding=True, device="cpu", progress=False)
    out |= _frame("annotate", frame) | {"annotate_embedding": emb}
    out |= _frame("annotate_unconstrained", model.annotate(query, constrained=False, device="cpu", progress=False))
    frame, emb = model.annotate(query, legacy=True, return_embedding=True, device="cpu", progress=False)
    out |= _frame("annotate_legacy", frame) | {"annotate_legacy_embedding": emb}
    out |= _frame("annotate_open_set", model.annotate(query, open_set=True, device="cpu", progress=False))
    out["embedding_mean"] = model.get_latent_representation(query, pooling="mean", device="cpu", progress=False)
    out |= _frame("metadata", model.predict_metadata(query, ["organ"], device="cpu", progress=False))
    conditions = {
        "organ": list(ref.obs["organ"].astype(str)[:4]),
        "cell_type": list(ref.obs["cell_type"].astype(str)[:4]),
    }
    for name, kw in {
        "generate": {},
        "generate_legacy": {"legacy": True},
        "generate_prompted": {"gene_prompts": {model.vocab.genes[0]: 7, model.vocab.genes[1]: 0}, "temperature": 0.8},
    }.items():
        cells = model.generate(conditions, n_cells=5, seed=4, device="cpu", progress=False, **kw)
        out[f"{name}_X"] = cells.X.toarray()
        out[f"{name}_levels"] = cells.layers["levels"].toarray()
        out[f"{name}_ended"] = cells.obs["ended"].to_numpy()
    new = scmulan.datasets.synthetic_atlas(n_cells=200, seed=5, n_fine_per_coarse=4)
    scmulan.pp.prepare(new)
    scmulan.SCMULAN.setup_anndata(new, coarse_cell_type_key="coarse_cell_type", cell_type_key="cell_type")
    model.finetune(new, max_epochs=1, batch_size=32, accelerator="cpu", enable_progress_bar=False)
    out["weights_finetuned"] = _weights(model)
    out |= _frame("annotate_finetuned", model.annotate(new[:100], device="cpu", progress=False))
    return out


def _weights(model) -> np.ndarray:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().numpy().tobytes())
    return np.frombuffer(digest.digest(), dtype=np.uint8)


def _frame(prefix: str, frame) -> dict[str, np.ndarray]:
    arrays = {}
    for column in frame.columns:
        values = frame[column]
        if values.dtype.name == "category":
            values = values.astype("string").fillna("<NA>").to_numpy(dtype=str)
        arrays[f"{prefix}_{column}"] = np.asarray(values)
    return arrays


def compare(a: str, b: str) -> int:
    """Print every array that differs (bit for bit); return the number of differences."""
    before, after = np.load(a, allow_pickle=False), np.load(b, allow_pickle=False)
    differ = sorted(set(before.files) ^ set(after.files))
    for key in sorted(set(before.files) & set(after.files)):
        x, y = before[key], after[key]
        if x.shape != y.shape or x.dtype != y.dtype or x.tobytes() != y.tobytes():
            differ.append(key)
    for key in differ:
        print("differs:", key)
    print(f"{len(before.files)} arrays compared, {len(differ)} differ")
    return len(differ)


def main() -> None:
    """Write a snapshot, or compare two."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("write").add_argument("path")
    cmp = sub.add_parser("compare")
    cmp.add_argument("before")
    cmp.add_argument("after")
    args = parser.parse_args()
    if args.command == "write":
        arrays = snapshot()
        np.savez(args.path, **{k: np.asarray(v) for k, v in arrays.items()})
        print(f"{len(arrays)} arrays written to {args.path}")
    else:
        sys.exit(1 if compare(args.before, args.after) else 0)


if __name__ == "__main__":
    main()
