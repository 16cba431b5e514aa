"""Streaming training sentences: a :class:`torch.utils.data.IterableDataset` over one or many sources.

An epoch is a deterministic plan: the cells of all sources are cut into blocks of consecutive rows (one row per
block for in-memory data, longer blocks for backed files so reads stay contiguous), the blocks are shuffled with
the seed and the epoch, and consecutive blocks form chunks of ``chunk_size`` cells. Each (rank, worker) pair
takes every ``world_size * num_workers``-th chunk; every chunk gives the same number of batches, so every rank
sees the same number of batches (DDP needs it). The plan pads the epoch by wrapping around, as
:class:`~torch.utils.data.DistributedSampler` does. Within a chunk, cells are read, turned into training
sentences (tasks sampled per cell), sorted by length into batches and the batches shuffled. Random draws come
from ``(seed, epoch, chunk)``, so a run resumed at batch ``k`` of an epoch (``start_batch``) sees exactly the
batches it would have seen.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from scmulan._warnings import warn

from ._assemble import Sentences
from ._collate import pad
from ._genes import warn_truncated
from ._layout import SentenceLayout
from ._sources import CellSource
from ._tasks import TaskSpec, training_sentences


class TrainingSentenceDataset(IterableDataset):
    """Batches of training sentences streamed from :class:`CellSource` objects.

    Parameters
    ----------
    sources
        The cells (e.g. one per corpus shard).
    spec
        Fields and task mix.
    task_ids
        Token id of each task prompt (``"<generate>"``, ``"<annotate>"``, ``"<metadata>"``).
    end_id, pad_id
        Ids of ``<E>`` and of the padding entity.
    batch_size
        Sentences per batch.
    chunk_size
        Cells read and bucketed together (larger: less padding, more memory).
    max_length
        Maximum sentence length; longer cells keep their most highly expressed genes (ignored with ``layout``).
    block_size
        Consecutive rows kept together when shuffling (1 = full shuffle; larger for backed files).
    indices
        Per source, the rows to use (e.g. the training split); ``None``: all rows.
    shuffle
        Shuffle blocks, rows and batches (training). Without it the plan is the same every epoch.
    seed
        Seed of every random draw.
    rank, world_size
        This process's place in a distributed run (default: read from :mod:`torch.distributed` when iterating).
    warn_truncation
        At the end of every pass over the data, warn with the number of cells whose sentences were cut to
        ``max_length`` (counted by each process: the main one, or each data-loading worker).
    layout
        The model's :class:`SentenceLayout` (gene budget and order); default: one with ``max_length``.
    """

    def __init__(
        self,
        sources: list[CellSource],
        spec: TaskSpec,
        task_ids: dict[str, int],
        *,
        end_id: int,
        pad_id: int,
        batch_size: int = 32,
        chunk_size: int = 2048,
        max_length: int = 1550,
        block_size: int = 1,
        indices: list[np.ndarray | None] | None = None,
        shuffle: bool = True,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        warn_truncation: bool = True,
        layout: SentenceLayout | None = None,
    ) -> None:
        super().__init__()
        self.sources = sources
        self.spec = spec
        self.task_ids = task_ids
        self.end_id, self.pad_id = end_id, pad_id
        self.layout = layout if layout is not None else SentenceLayout(max_length)
        self.batch_size, self.chunk_size, self.max_length = batch_size, chunk_size, self.layout.max_length
        self.block_size, self.shuffle, self.seed = block_size, shuffle, seed
        self.indices = indices or [None] * len(sources)
        self._rank, self._world_size = rank, world_size
        self.warn_truncation = warn_truncation
        self.epoch = 0
        self._truncated = [0, 0]  # cells that lost genes to max_length, cells read (this pass, this process)
        self.start_batch = 0  # batches of this epoch already consumed (set when resuming)
        n = sum(len(ix) if ix is not None else s.n_obs for s, ix in zip(sources, self.indices, strict=True))
        if n == 0:
            msg = "The training data have no cells."
            raise ValueError(msg)
        self.n_cells = n

    # -- the plan -------------------------------------------------------------------------------------------------
    def _world(self) -> tuple[int, int]:
        if self._rank is not None and self._world_size is not None:
            return self._rank, self._world_size
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        # DataLoader workers started with spawn/forkserver have no process group of their own: when this process
        # is part of one, send its rank along (a dataset pickled before the group exists still resolves it later).
        if (self._rank is None or self._world_size is None) and torch.distributed.is_available():
            if torch.distributed.is_initialized():
                state["_rank"], state["_world_size"] = self._world()
        return state

    def _chunk_cells(self, n_parts: int) -> int:
        # As many chunks as `chunk_size` needs (a multiple of the parts, so every rank and worker gets work), each
        # as even as possible, so an epoch pads at most n_chunks - 1 cells instead of up to a whole chunk.
        n_chunks = math.ceil(self.n_cells / (self.chunk_size * n_parts)) * n_parts
        return max(1, math.ceil(self.n_cells / n_chunks))

    def batches_per_chunk(self, n_parts: int) -> int:
        """Number of batches every chunk yields."""
        return math.ceil(self._chunk_cells(n_parts) / self.batch_size)

    def _global_rows(self) -> tuple[np.ndarray, np.ndarray]:
        src = np.concatenate(
            [
                np.full(len(ix) if ix is not None else s.n_obs, k, dtype=np.int64)
                for k, (s, ix) in enumerate(zip(self.sources, self.indices, strict=True))
            ]
        )
        row = np.concatenate(
            [
                np.asarray(ix, dtype=np.int64) if ix is not None else np.arange(s.n_obs, dtype=np.int64)
                for s, ix in zip(self.sources, self.indices, strict=True)
            ]
        )
        return src, row

    def plan(self, n_parts: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """The epoch's chunks ``(source index, row)`` for ``n_parts`` readers (ranks x workers), a multiple of it."""
        src, row = self._global_rows()
        n = len(row)
        order = np.arange(n)
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch])
            n_blocks = math.ceil(n / self.block_size)
            blocks = rng.permutation(n_blocks)
            starts = blocks * self.block_size
            sizes = np.minimum(self.block_size, n - starts)
            order = np.repeat(starts, sizes) + (np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes))
        chunk = self._chunk_cells(n_parts)
        n_chunks = math.ceil(n / (chunk * n_parts)) * n_parts
        order = np.resize(order, n_chunks * chunk)  # wrap around to fill the last chunks
        return [(src[c], row[c]) for c in order.reshape(n_chunks, chunk)]

    def __len__(self) -> int:
        """Batches per epoch on this rank (all workers together)."""
        _, world = self._world()
        n_chunks = len(self.plan(world))  # a multiple of world
        return n_chunks // world * self.batches_per_chunk(world)

    # -- building batches -----------------------------------------------------------------------------------------
    def build_chunk(self, chunk_id: int, src: np.ndarray, row: np.ndarray) -> list[dict[str, torch.Tensor]]:
        """The padded batches of one chunk (deterministic given seed, epoch and chunk id).

        A chunk in which no cell qualifies for any requested task (possible with sparse labels and small chunks)
        takes its cells from the next chunk of the epoch's plan that has some, with a warning, so that every chunk
        still gives :meth:`batches_per_chunk` batches (every rank must yield the same number of batches).
        """
        rng = np.random.default_rng([self.seed, self.epoch, chunk_id, 1])
        sentences, task = self._sentences(src, row, rng)
        if len(sentences) == 0:
            sentences, task = self._borrowed_sentences(chunk_id, rng)
        return self._batches(sentences, task[task >= 0], rng)

    def _sentences(self, src: np.ndarray, row: np.ndarray, rng: np.random.Generator) -> tuple[Sentences, np.ndarray]:
        """Training sentences of the cells ``(src, row)``; counts truncated cells in ``_truncated``."""
        if self.shuffle:
            perm = rng.permutation(len(row))
            src, row = src[perm], row[perm]
        X_parts, meta_parts = [], []
        for k in np.unique(src):
            sel = src == k
            X, meta = self.sources[k].read(row[sel])
            X_parts.append((np.flatnonzero(sel), X))
            meta_parts.append(meta)
        order = np.concatenate([p for p, _ in X_parts])
        from scipy import sparse

        meta = np.concatenate(meta_parts)[np.argsort(order, kind="stable")]
        if len(self.sources) > 1:  # shards may differ in genes and their order: columns become token ids
            X = _align_columns(X_parts, self.sources, src, order)
            col_token = np.arange(X.shape[1], dtype=np.int64)
        else:
            X = sparse.vstack([x for _, x in X_parts], format="csr")[np.argsort(order, kind="stable")]
            col_token = self.sources[0].col_token
        genes = self.layout.training_genes(X, col_token, meta.shape[1], rng)
        self._truncated[0] += genes.n_truncated
        self._truncated[1] += len(row)
        return training_sentences(genes, meta, self.spec, self.task_ids, self.end_id, rng)

    def _borrowed_sentences(self, chunk_id: int, rng: np.random.Generator) -> tuple[Sentences, np.ndarray]:
        """Sentences from the first chunk after ``chunk_id`` in the plan that has a qualifying cell."""
        _, world = self._world()
        chunks = self.plan(world)
        for step in range(1, len(chunks)):
            other = (chunk_id + step) % len(chunks)
            sentences, task = self._sentences(*chunks[other], rng)
            if len(sentences):
                warn(
                    f"No cell of training chunk {chunk_id} (epoch {self.epoch}) qualifies for any requested task "
                    f"(annotation needs {list(self.spec.annotation_fields)}; metadata needs one of the metadata "
                    f"fields); its batches repeat the cells of chunk {other}. Larger chunks (`chunk_size`) make "
                    "this rarer.",
                    UserWarning,
                )
                return sentences, task
        msg = (
            "No training cell qualifies for any requested task: the data lack the labels the tasks need "
            f"(annotation needs {list(self.spec.annotation_fields)}; metadata needs one of the metadata fields)."
        )
        raise ValueError(msg)

    def _batches(self, sentences: Sentences, task: np.ndarray, rng: np.random.Generator) -> list[dict]:
        _, world = self._world()
        n_batches = self.batches_per_chunk(world)
        by_length = np.argsort(sentences.lengths, kind="stable")
        parts = [p for p in np.array_split(by_length, n_batches) if len(p)]
        while len(parts) < n_batches:  # fewer sentences than batches: repeat, so every rank yields the same count
            parts.append(parts[len(parts) % max(1, len(parts))])
        batches = []
        for i in rng.permutation(len(parts)):
            batch = pad(sentences, parts[i], pad_id=self.pad_id, side="right")
            batch["task"] = torch.from_numpy(task[parts[i]].astype(np.int64))
            batches.append(batch)
        return batches

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        rank, world = self._world()
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        chunks = self.plan(world)
        mine = list(range(rank, len(chunks), world))  # this rank's chunks, in order
        per_chunk = self.batches_per_chunk(world)
        # Chunks are dealt to workers in turn; the DataLoader interleaves workers' batches round-robin (skipping
        # workers that are done), so the first start_batch batches hold a known number of each worker's batches.
        my_chunks = mine[worker::n_workers]
        counts = [len(mine[w::n_workers]) * per_chunk for w in range(n_workers)]
        skip = _batches_before(counts, worker, self.start_batch)
        self._truncated = [0, 0]
        try:
            for chunk_id in my_chunks:
                if skip >= per_chunk:
                    skip -= per_chunk
                    continue
                src, row = chunks[chunk_id]
                yield from self.build_chunk(chunk_id, src, row)[skip:]
                skip = 0
        finally:  # also when the consumer stops early
            if self.warn_truncation:
                reader = f" by data-loading worker {worker}" if info is not None else ""
                warn_truncated(
                    *self._truncated,
                    self.layout.training_gene_budget(len(self.sources[0].obs_keys)),
                    cells=f"training cells read in this pass{reader}",
                    hint="raise `max_length` to keep them all",
                )


def _batches_before(counts: list[int], worker: int, start: int) -> int:
    """How many of ``worker``'s batches come before position ``start`` when a DataLoader interleaves workers.

    The DataLoader takes one batch from each worker in turn (worker 0 first) and skips workers that are exhausted,
    so ``worker``'s ``j``-th batch is at position ``sum(min(c, j) for c in counts)`` plus the number of workers
    before it that still have a ``j``-th batch.
    """
    c = np.asarray(counts, dtype=np.int64)
    j = np.arange(c[worker])
    position = np.minimum(c[None, :], j[:, None]).sum(1) + (c[None, :worker] > j[:, None]).sum(1)
    return int((position < start).sum())


def _align_columns(parts, sources: list[CellSource], src: np.ndarray, order: np.ndarray):
    """Stack chunks of sources with different gene columns into one matrix over token ids."""
    from scipy import sparse

    n_tokens = len(sources[0].vocab)
    mats = []
    for k, (_, X) in zip(np.unique(src), parts, strict=True):
        col = sources[k].col_token
        X = X.tocoo()
        keep = col[X.col] >= 0
        mats.append(sparse.csr_matrix((X.data[keep], (X.row[keep], col[X.col[keep]])), shape=(X.shape[0], n_tokens)))
    return sparse.vstack(mats, format="csr")[np.argsort(order, kind="stable")]
