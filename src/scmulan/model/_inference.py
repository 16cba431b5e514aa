"""The one inference runner behind annotation, metadata prediction, embeddings and generation.

Cells are read in chunks (in-memory or backed AnnData), turned into prompts, sorted by length into batches within
the chunk, right-padded (real tokens first: the prompt pass runs plain causal attention, exact because the model has
no positional embedding), decoded with the key/value cache on the chosen device, and the results are written back
in the original cell order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from scmulan._device import autocast
from scmulan.nn import CSentenceTransformer, greedy_decode, sample_decode
from scmulan.sentence import (
    CellSource,
    GeneSegments,
    Segment,
    concat,
    gene_segments,
    length_batches,
    offsets_from_lengths,
    pad,
    prompts,
    warn_truncated,
)

if TYPE_CHECKING:
    from scmulan.vocab import Vocabulary


@dataclass
class Decoded:
    """Greedy decoding results for ``n`` cells (``S`` steps)."""

    tokens: np.ndarray  # (n, S) int64
    probs: np.ndarray  # (n, S) float32
    n_generated: np.ndarray  # (n,) int64
    n_genes: np.ndarray  # (n,) expressed model genes in the prompt
    prompt_tail: np.ndarray  # (n, 3) the last three prompt ids (-1 where the prompt is shorter)
    embedding: np.ndarray | None = None  # (n, C) the embedding asked for (``embedding=`` of decode_cells)
    legacy_embedding: np.ndarray | None = None  # (n, C) the same array when the original scMulan's choice was asked
    pooled: np.ndarray | None = None  # (n, C) mean over gene positions of the prompt


@torch.inference_mode()
def decode_cells(
    net: CSentenceTransformer,
    vocab: Vocabulary,
    source: CellSource,
    *,
    task: str,
    n_steps: int,
    allowed: list[np.ndarray | None] | None = None,
    banned: np.ndarray | None = None,
    ban_prompt: Literal["none", "all_but_last"] = "none",
    stop_at_end: bool = False,
    use_context: bool = True,
    pool: bool = False,
    batch_size: int = 64,
    chunk_size: int = 4096,
    max_genes: int | None = None,
    device: torch.device | None = None,
    mixed_precision: bool = True,
    progress: bool = True,
    embedding: Literal["first", "legacy"] | None = "first",
    max_tokens: int | None = 65536,
    quantize: bool = False,
) -> Decoded:
    """Greedy decoding for every cell of ``source`` (see :func:`scmulan.nn.greedy_decode`).

    Parameters
    ----------
    net, vocab
        The network and its vocabulary.
    source
        The cells; its ``obs_keys`` are used as context metadata when ``use_context``.
    task
        Task prompt (``"<annotate>"`` or ``"<metadata>"``).
    n_steps
        Tokens to decode.
    allowed, banned
        Boolean masks over the vocabulary: per-step allowed entities, and never-decoded entities.
    ban_prompt, stop_at_end
        The original scMulan's decoding rules (legacy mode).
    use_context
        Put the cells' known metadata (``source.obs_keys``) in the prompt.
    pool
        Also return the mean final hidden state over the prompt's gene positions.
    batch_size, chunk_size
        Cells per forward pass, and cells read and length-bucketed together.
    max_genes
        Keep at most this many genes per cell (the most highly expressed).
    device
        Where to run (default: the network's device).
    mixed_precision
        bf16 autocast on CUDA.
    progress
        Show a progress bar.
    embedding
        Which embedding to return (only that array is allocated): ``"first"``, the hidden state at the first
        generated token (needs ``n_steps >= 2``); ``"legacy"``, the original scMulan's (the hidden state at the
        last prompt position before its final ``<E>``); ``None``: none.
    max_tokens
        At most this many padded prompt tokens per batch (fewer cells in batches of long prompts), so memory stays
        flat whatever the prompt lengths; ``None``: ``batch_size`` cells always.
    quantize
        On the CPU, run an int8 copy of the network (dynamic quantisation of every ``nn.Linear``, weights int8 and
        activations quantised per batch): faster matrix products at a small cost in precision (see the
        performance guide). Ignored on other devices.
    """
    device = device or net.device
    net = net.to(device).eval()
    if quantize and torch.device(device).type == "cpu":
        net = quantized(net)
    n, C = source.n_obs, net.config.n_embd
    tokens = np.zeros((n, n_steps), dtype=np.int64)
    probs = np.zeros((n, n_steps), dtype=np.float32)
    n_generated = np.zeros(n, dtype=np.int64)
    n_genes = np.zeros(n, dtype=np.int64)
    tail = np.full((n, 3), -1, dtype=np.int64)
    if embedding not in ("first", "legacy", None):
        msg = f"`embedding` must be 'first', 'legacy' or None, got {embedding!r}."
        raise ValueError(msg)
    emb = np.zeros((n, C), dtype=np.float32) if embedding == "legacy" or (embedding and n_steps >= 2) else None
    pooled = np.zeros((n, C), dtype=np.float32) if pool else None
    to_device = lambda m: torch.as_tensor(m, device=device) if m is not None else None
    allowed_t = [to_device(a) for a in allowed] if allowed is not None else None
    banned_t = to_device(banned)
    task_id = vocab.task_id(task)
    n_truncated = 0
    with tqdm(total=n, desc="decoding", unit="cells", disable=not progress) as bar:
        for rows, X, meta in source.iter_chunks(chunk_size):
            genes = gene_segments(X, source.col_token, order="legacy", max_genes=max_genes)
            n_truncated += genes.n_truncated
            context = meta if use_context and meta.shape[1] else None
            sentences = prompts(task_id, len(rows), genes=genes, context=context)
            n_genes[rows] = genes.lengths
            for b in length_batches(sentences.lengths, batch_size, max_tokens=max_tokens):
                batch = pad(sentences, b, pad_id=vocab.pad_id, side="right")
                ids, lv, mask = (batch[k].to(device) for k in ("ids", "levels", "attention_mask"))
                with autocast(device, mixed_precision=mixed_precision):
                    out = greedy_decode(
                        net,
                        ids,
                        lv,
                        mask,
                        n_steps,
                        allowed=allowed_t,
                        banned=banned_t,
                        ban_prompt=ban_prompt,
                        stop_at_end=stop_at_end,
                        end_id=vocab.end_id,
                        pool_mask=(lv > 0) if pool else None,
                        padding="right",
                    )
                r = rows[b]
                # the last three prompt tokens of each row (-1 before the start of short prompts)
                pos = batch["lengths"].to(device)[:, None] - 3 + torch.arange(3, device=device)[None, :]
                window = torch.where(pos >= 0, ids.gather(1, pos.clamp(min=0)), -1)
                # integers and floats in one transfer each (one host sync per kind, not per array)
                ints = torch.cat([out.tokens, out.n_generated[:, None], window], 1).cpu().numpy()
                tokens[r], n_generated[r], tail[r] = ints[:, :n_steps], ints[:, n_steps], ints[:, n_steps + 1 :]
                floats = [out.probs.float()]
                if emb is not None:
                    at = out.n_generated - 1 if embedding == "legacy" else torch.full_like(out.n_generated, 2)
                    floats.append(out.hidden[torch.arange(len(b), device=device), at].float())
                if pooled is not None:
                    floats.append(out.pooled.float())
                host = torch.cat(floats, 1).cpu().numpy()
                probs[r] = host[:, :n_steps]
                if emb is not None:
                    emb[r] = host[:, n_steps : n_steps + C]
                if pooled is not None:
                    pooled[r] = host[:, -C:]
            bar.update(len(rows))
    if max_genes is not None:
        warn_truncated(n_truncated, n, max_genes)
    legacy = emb if embedding == "legacy" else None
    return Decoded(tokens, probs, n_generated, n_genes, tail, emb, legacy, pooled)


def quantized(net: CSentenceTransformer) -> CSentenceTransformer:
    """An int8 copy of ``net`` for CPU inference: dynamic quantisation of the transformer blocks' linear layers.

    ``torch.ao.quantization.quantize_dynamic`` with int8 weights and activations quantised per batch. The two heads
    stay float32: they choose among nearly tied entities, and quantising them too flipped several times more of a
    small trained network's labels (see ``annotation_throughput.py --int8-trained`` for the agreement).
    """
    import copy
    import warnings

    layers = ("attn.qkv", "attn.proj", "mlp.fc", "mlp.proj")
    spec = {
        f"blocks.{i}.{name}": torch.ao.quantization.default_dynamic_qconfig
        for i in range(len(net.blocks))
        for name in layers
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch deprecates its quantized tensors and this API in favour of torchao
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(net).cpu(), spec, dtype=torch.qint8)


@dataclass
class Generated:
    """Generated cells: gene ids and levels per cell (ragged), and whether each cell ended with ``<E>``."""

    ids: np.ndarray
    levels: np.ndarray
    offsets: np.ndarray
    ended: np.ndarray


@torch.inference_mode()
def generate_cells(
    net: CSentenceTransformer,
    vocab: Vocabulary,
    conditions: np.ndarray,
    *,
    prompt_genes: GeneSegments | None = None,
    exclude: list[int] | None = None,
    max_new_tokens: int = 1500,
    temperature: float = 1.0,
    top_k: int | None = None,
    gamma: float = 0.1,
    seed: int = 0,
    batch_size: int = 64,
    device: torch.device | None = None,
    mixed_precision: bool = True,
    legacy: bool = False,
    progress: bool = True,
) -> Generated:
    """Sample one cell per row of ``conditions`` (metadata token ids, ``-1`` where unconditioned).

    Genes given in ``prompt_genes`` (with their levels) follow the ``<generate>`` prompt as if already generated,
    and stay part of the cell; genes in ``exclude`` are never drawn. The random generator is seeded once per call on the device, so the same seed, batch
    size and device give the same cells.
    """
    device = device or net.device
    net = net.to(device).eval()
    n = conditions.shape[0]
    task_id = vocab.task_id("<generate>")
    sentences = prompts(task_id, n, context=conditions, prompt_genes=prompt_genes)
    if legacy:
        candidates = None
    else:
        candidates = torch.zeros(len(vocab), dtype=torch.bool, device=device)
        candidates[torch.as_tensor(vocab.gene_ids, device=device)] = True
        candidates[vocab.end_id] = True
        if exclude:
            candidates[torch.as_tensor(exclude, device=device)] = False
    generator = torch.Generator(device=device).manual_seed(seed)
    gen_ids, gen_levels, lengths = [], [], np.zeros(n, dtype=np.int64)
    ended = np.zeros(n, dtype=bool)
    with tqdm(total=n, desc="generating", unit="cells", disable=not progress) as bar:
        for start in range(0, n, batch_size):
            b = np.arange(start, min(start + batch_size, n))
            batch = pad(sentences, b, pad_id=vocab.pad_id, side="right")
            ids, lv, mask = (batch[k].to(device) for k in ("ids", "levels", "attention_mask"))
            with autocast(device, mixed_precision=mixed_precision):
                out = sample_decode(
                    net,
                    ids,
                    lv,
                    mask,
                    max_new_tokens,
                    candidates=candidates,
                    end_id=vocab.end_id,
                    temperature=temperature,
                    top_k=top_k,
                    gamma=gamma,
                    generator=generator,
                    ban_seen="all_but_last" if legacy else "all",
                    level_range=(0, 10) if legacy else (1, 10),
                    padding="right",
                )
            tok, lvl = out.tokens.cpu().numpy(), out.levels.cpu().numpy()
            keep = (tok >= 0) & (tok != vocab.end_id)
            gen_ids.append(tok[keep])
            gen_levels.append(lvl[keep])
            lengths[b] = keep.sum(1)
            ended[b] = out.ended.cpu().numpy()
            bar.update(len(b))
    new = GeneSegments(np.concatenate(gen_ids), np.concatenate(gen_levels), offsets_from_lengths(lengths))
    if prompt_genes is not None:  # the prompted genes are part of the cell
        both = concat([Segment.from_genes(prompt_genes), Segment.from_genes(new)])
        return Generated(both.ids, both.levels, both.offsets, ended)
    return Generated(new.ids, new.levels, new.offsets, ended)
