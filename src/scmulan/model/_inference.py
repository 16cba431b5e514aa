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
from scmulan.nn import CSentenceTransformer, greedy_decode, hierarchical_decode, sample_decode
from scmulan.sentence import (
    CellSource,
    GeneSegments,
    Segment,
    SentenceLayout,
    concat,
    length_batches,
    offsets_from_lengths,
    pad,
    warn_truncated,
)

if TYPE_CHECKING:
    from scmulan.vocab import Vocabulary


#: On a CPU, the widest activation of one batch (the MLP's ``4 x width`` float32 values per padded prompt token) is
#: kept near this size: bigger batches are slower there, not faster (annotation of ~610-token prompts ran 2.1-2.5x
#: faster than in batches of 64 cells at the ``tiny``, ``small`` and ``base`` widths, 1.4x than in batches of 4 at
#: scMulan-v1's: benchmarks/README.md, "Batch size on a CPU").
CPU_ACTIVATION_BYTES = 8 * 2**20
#: On an accelerator, padded prompt tokens per batch (memory stays flat whatever the prompt lengths).
ACCELERATOR_MAX_TOKENS = 65536


def decoding_token_budget(device: torch.device | str, n_embd: int) -> int:
    """Padded prompt tokens per decoding batch on ``device`` for a network ``n_embd`` wide.

    On a CPU, ``CPU_ACTIVATION_BYTES / (16 * n_embd)`` (8,192 tokens at width 64, 4,096 at 128, 468 at 1,120), so
    that the batch's activations stay small (larger ones fall out of the caches and, above the C allocator's mapping
    threshold, are mapped afresh from the system at every layer); elsewhere ``ACCELERATOR_MAX_TOKENS``. A batch holds
    at least one cell whatever its length.

    Parameters
    ----------
    device
        Where the network runs.
    n_embd
        The network's width.

    Returns
    -------
    The budget in padded tokens.
    """
    if torch.device(device).type != "cpu":
        return ACCELERATOR_MAX_TOKENS
    return max(1, CPU_ACTIVATION_BYTES // (4 * 4 * n_embd))


@dataclass
class Decoded:
    """Greedy decoding results for ``n`` cells (``S`` steps)."""

    tokens: np.ndarray  # (n, S) int64
    probs: np.ndarray  # (n, S) float32
    n_generated: np.ndarray  # (n,) int64
    n_genes: np.ndarray  # (n,) expressed model genes in the prompt
    prompt_tail: np.ndarray  # (n, 3) the last three prompt ids (-1 where the prompt is shorter)
    embedding: np.ndarray | None = None  # (n, C) the embedding the recipe asked for (``DecodingRecipe.embedding``)
    pooled: np.ndarray | None = None  # (n, C) mean over gene positions of the prompt
    marginal: np.ndarray | None = None  # (n,) P(second label) summed over the first (``DecodingRecipe.marginal``)


@dataclass(frozen=True, eq=False)
class DecodingRecipe:
    """What :func:`decode_cells` decodes, fixed once per call: the prompt, the steps and their rules, the outputs.

    Build one with the constructors (:meth:`annotation`, :meth:`legacy_annotation`, :meth:`metadata`,
    :meth:`mean_pooling`) rather than field by field.

    Attributes
    ----------
    task
        ``"annotation"`` or ``"metadata"``: the prompt token (see :class:`~scmulan.sentence.SentenceLayout`).
    n_steps
        Tokens decoded per cell.
    allowed
        Per step, a boolean mask over the vocabulary of the entities that may be chosen (``None``: any).
    banned
        Boolean mask of entities never chosen (the original's ``ignore_Idx``).
    use_context
        Put the cells' known metadata (the source's ``obs_keys``) in the prompt.
    legacy
        The original scMulan's rules: every entity already in the sentence banned except the most recent one,
        a cell stops at ``<E>``, prompts never cut, float32 even on GPUs (bf16 flips near-tied greedy steps).
    embedding
        Which embedding to return (only that array is allocated): ``"first"``, the hidden state at the first decoded
        token (needs ``n_steps >= 2``); ``"legacy"``, the original's (the hidden state at the last prompt position
        before its final ``<E>``); ``None``: none.
    pool
        Also return the mean final hidden state over the prompt's gene positions.
    logit_bias
        ``(V,)`` added to the entity logits before every choice (the reference's label prior removed by
        ``annotate(prior_correction=...)``); ``None``: none.
    marginal
        Two restricted steps decoded by :func:`~scmulan.nn.hierarchical_decode`: the second label chosen by its
        probability summed over every first label, then the first given it (instead of greedily, one step after the
        other).
    """

    task: str
    n_steps: int
    allowed: tuple[np.ndarray | None, ...] | None = None
    banned: np.ndarray | None = None
    use_context: bool = True
    legacy: bool = False
    embedding: Literal["first", "legacy"] | None = None
    pool: bool = False
    logit_bias: np.ndarray | None = None
    marginal: bool = False

    def __post_init__(self) -> None:
        if self.embedding not in ("first", "legacy", None):
            msg = f"`embedding` must be 'first', 'legacy' or None, got {self.embedding!r}."
            raise ValueError(msg)
        if self.marginal and (self.n_steps != 2 or self.allowed is None or any(a is None for a in self.allowed)):
            msg = "Marginal decoding needs exactly two steps, each restricted to a field's categories."
            raise ValueError(msg)

    @classmethod
    def annotation(
        cls,
        allowed: list[np.ndarray | None] | None,
        banned: np.ndarray | None,
        n_steps: int,
        *,
        embedding: bool,
        logit_bias: np.ndarray | None = None,
        marginal: bool = False,
    ) -> DecodingRecipe:
        """Coarse then fine cell type, each step restricted to ``allowed`` (constrained) or free (``None``)."""
        return cls(
            "annotation",
            n_steps,
            tuple(allowed) if allowed is not None else None,
            banned,
            embedding="first" if embedding else None,
            logit_bias=logit_bias,
            marginal=marginal,
        )

    @classmethod
    def legacy_annotation(cls, banned: np.ndarray | None, *, embedding: bool) -> DecodingRecipe:
        """The original scMulan's annotation: three free steps under its rules (see ``legacy``)."""
        return cls(
            "annotation", 3, None, banned, use_context=False, legacy=True, embedding="legacy" if embedding else None
        )

    @classmethod
    def metadata(cls, allowed: list[np.ndarray]) -> DecodingRecipe:
        """One metadata field per step, each restricted to its field's categories."""
        return cls("metadata", len(allowed), tuple(allowed))

    @classmethod
    def mean_pooling(cls) -> DecodingRecipe:
        """No decoding: the mean final hidden state over each prompt's genes (no metadata in the prompt)."""
        return cls("annotation", 1, use_context=False, pool=True)


@torch.inference_mode()
def decode_cells(
    net: CSentenceTransformer,
    vocab: Vocabulary,
    source: CellSource,
    recipe: DecodingRecipe,
    *,
    layout: SentenceLayout,
    batch_size: int = 64,
    chunk_size: int = 4096,
    device: torch.device | None = None,
    progress: bool = True,
    max_tokens: int | Literal["auto"] | None = "auto",
    quantize: bool = False,
) -> Decoded:
    """Greedy decoding of ``recipe`` for every cell of ``source``, in length-sorted right-padded batches.

    Parameters
    ----------
    net
        The transformer.
    vocab
        Its vocabulary.
    source
        The cells.
    recipe
        What to decode and return.
    layout
        The model's sentence layout (prompt token, gene budget and order).
    batch_size, chunk_size
        At most this many cells per forward pass (see ``max_tokens``), and cells read and length-bucketed together.
    device
        Where to run (default: the network's device).
    progress
        Show a progress bar.
    max_tokens
        At most this many padded prompt tokens per batch (fewer cells in batches of long prompts), so memory stays
        flat whatever the prompt lengths; ``"auto"``: :func:`decoding_token_budget` (few on a CPU, where smaller
        batches run faster); ``None``: ``batch_size`` cells always.
    quantize
        On the CPU, run an int8 copy of the network (dynamic quantisation of every ``nn.Linear``, weights int8 and
        activations quantised per batch): faster matrix products at a small cost in precision (see the
        performance guide). Ignored on other devices.
    """
    device = device or net.device
    net = net.to(device).eval()
    if max_tokens == "auto":
        max_tokens = decoding_token_budget(device, net.config.n_embd)
    if quantize and torch.device(device).type == "cpu":
        net = quantized(net)
    n, C, n_steps, embedding = source.n_obs, net.config.n_embd, recipe.n_steps, recipe.embedding
    tokens = np.zeros((n, n_steps), dtype=np.int64)
    probs = np.zeros((n, n_steps), dtype=np.float32)
    n_generated = np.zeros(n, dtype=np.int64)
    n_genes = np.zeros(n, dtype=np.int64)
    tail = np.full((n, 3), -1, dtype=np.int64)
    emb = np.zeros((n, C), dtype=np.float32) if embedding == "legacy" or (embedding and n_steps >= 2) else None
    pooled = np.zeros((n, C), dtype=np.float32) if recipe.pool else None
    marginal = np.zeros(n, dtype=np.float32) if recipe.marginal else None
    to_device = lambda m: torch.as_tensor(m, device=device) if m is not None else None
    allowed_t = [to_device(a) for a in recipe.allowed] if recipe.allowed is not None else None
    banned_t = to_device(recipe.banned)
    bias_t = (
        None if recipe.logit_bias is None else torch.as_tensor(recipe.logit_bias, dtype=torch.float32, device=device)
    )
    if recipe.marginal:  # the entities each of the two steps may choose
        keep = ~banned_t if banned_t is not None else True
        first, second = (torch.nonzero(a & keep).squeeze(1) for a in allowed_t)
    task_id = vocab.task_id(layout.prompt_token(recipe.task))
    n_context = len(source.obs_keys)
    n_truncated = 0
    with tqdm(total=n, desc="decoding", unit="cells", disable=not progress) as bar:
        for rows, X, meta in source.iter_chunks(chunk_size):
            genes = layout.decoding_genes(X, source.col_token, n_context, truncate=not recipe.legacy)
            n_truncated += genes.n_truncated
            context = meta if recipe.use_context and meta.shape[1] else None
            sentences = layout.inference_prompts(task_id, genes, context)
            n_genes[rows] = genes.lengths
            for b in length_batches(sentences.lengths, batch_size, max_tokens=max_tokens):
                batch = pad(sentences, b, pad_id=vocab.pad_id, side="right")
                ids, lv, mask = (batch[k].to(device) for k in ("ids", "levels", "attention_mask"))
                with autocast(device, mixed_precision=not recipe.legacy):
                    if recipe.marginal:
                        out = hierarchical_decode(net, ids, lv, mask, first, second, padding="right", logit_bias=bias_t)
                    else:
                        out = greedy_decode(
                            net,
                            ids,
                            lv,
                            mask,
                            n_steps,
                            allowed=allowed_t,
                            banned=banned_t,
                            ban_prompt="all_but_last" if recipe.legacy else "none",
                            stop_at_end=recipe.legacy,
                            end_id=vocab.end_id,
                            pool_mask=(lv > 0) if recipe.pool else None,
                            padding="right",
                            logit_bias=bias_t,
                        )
                r = rows[b]
                # the last three prompt tokens of each row (-1 before the start of short prompts)
                pos = batch["lengths"].to(device)[:, None] - 3 + torch.arange(3, device=device)[None, :]
                window = torch.where(pos >= 0, ids.gather(1, pos.clamp(min=0)), -1)
                # integers and floats in one transfer each (one host sync per kind, not per array)
                ints = torch.cat([out.tokens, out.n_generated[:, None], window], 1).cpu().numpy()
                tokens[r], n_generated[r], tail[r] = ints[:, :n_steps], ints[:, n_steps], ints[:, n_steps + 1 :]
                floats = {"probs": out.probs.float()}
                if emb is not None:
                    at = out.n_generated - 1 if embedding == "legacy" else torch.full_like(out.n_generated, 2)
                    floats["emb"] = out.hidden[torch.arange(len(b), device=device), at].float()
                if pooled is not None:
                    floats["pooled"] = out.pooled.float()
                if marginal is not None:
                    floats["marginal"] = out.marginal.float()[:, None]
                host = torch.cat(list(floats.values()), 1).cpu().numpy()
                ends = np.cumsum([f.shape[1] for f in floats.values()])
                got = dict(zip(floats, np.split(host, ends[:-1], axis=1), strict=True))
                probs[r] = got["probs"]
                if emb is not None:
                    emb[r] = got["emb"]
                if pooled is not None:
                    pooled[r] = got["pooled"]
                if marginal is not None:
                    marginal[r] = got["marginal"][:, 0]
            bar.update(len(rows))
    if not recipe.legacy:
        warn_truncated(n_truncated, n, layout.decoding_gene_budget(n_context))
    return Decoded(tokens, probs, n_generated, n_genes, tail, emb, pooled, marginal)


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


@dataclass(frozen=True)
class SamplingRecipe:
    """How :func:`generate_cells` samples, fixed once per call.

    Attributes
    ----------
    temperature, top_k, gamma
        Softmax temperature, top-k filtering (``None``: off) and the factor on the probability of ``<E>``.
    top_p
        Nucleus filtering (``None``: off).
    guidance
        Classifier-free guidance weight (1: none): the entity logits are pushed from those of the same prompt without
        its metadata conditions towards those with them (:func:`scmulan.nn.sample_decode`).
    level_guidance, guidance_steps
        The same for the level logits of the drawn genes (1: none), and the number of first draws the entity logits
        are guided at (``None``: all).
    seed
        Seed of the device's random generator (same seed, batch size and device: the same cells).
    legacy
        The original ``generate_cellGenesis``: any entity may be drawn, the most recent one is not banned, levels
        0..10; otherwise only genes not yet in the cell (and ``<E>``) are drawn, at levels 1..10.
    """

    temperature: float = 1.0
    top_k: int | None = None
    gamma: float = 0.1
    top_p: float | None = None
    guidance: float = 1.0
    level_guidance: float = 1.0
    guidance_steps: int | None = None
    seed: int = 0
    legacy: bool = False


@torch.inference_mode()
def generate_cells(
    net: CSentenceTransformer,
    vocab: Vocabulary,
    conditions: np.ndarray,
    recipe: SamplingRecipe,
    *,
    layout: SentenceLayout,
    prompt_genes: GeneSegments | None = None,
    exclude: list[int] | None = None,
    n_genes: np.ndarray | None = None,
    max_new_tokens: int = 1500,
    batch_size: int = 64,
    device: torch.device | None = None,
    progress: bool = True,
) -> Generated:
    """Sample one cell per row of ``conditions`` (metadata token ids, ``-1`` where unconditioned).

    Genes given in ``prompt_genes`` (with their levels) follow the ``<generate>`` prompt as if already generated,
    and stay part of the cell; genes in ``exclude`` are never drawn. ``n_genes`` (one per row, ``-1``: the model's
    stop) sets how many genes each cell draws. The random generator is seeded once per call on the device, so the
    same seed, batch size and device give the same cells.
    """
    device = device or net.device
    net = net.to(device).eval()
    n = conditions.shape[0]
    task_id = vocab.task_id(layout.prompt_token("generation"))
    sentences = layout.generation_prompts(task_id, conditions, prompt_genes)
    guided = recipe.guidance != 1.0 or recipe.level_guidance != 1.0
    if guided:  # the same prompts without their metadata conditions
        unconditioned = layout.generation_prompts(task_id, np.full_like(conditions, -1), prompt_genes)
    legacy = recipe.legacy
    if legacy:
        candidates = None
    else:
        candidates = torch.zeros(len(vocab), dtype=torch.bool, device=device)
        candidates[torch.as_tensor(vocab.gene_ids, device=device)] = True
        candidates[vocab.end_id] = True
        if exclude:
            candidates[torch.as_tensor(exclude, device=device)] = False
    generator = torch.Generator(device=device).manual_seed(recipe.seed)
    gen_ids, gen_levels, lengths = [], [], np.zeros(n, dtype=np.int64)
    ended = np.zeros(n, dtype=bool)
    with tqdm(total=n, desc="generating", unit="cells", disable=not progress) as bar:
        for start in range(0, n, batch_size):
            b = np.arange(start, min(start + batch_size, n))
            batch = pad(sentences, b, pad_id=vocab.pad_id, side="right")
            ids, lv, mask = (batch[k].to(device) for k in ("ids", "levels", "attention_mask"))
            unconditional = None
            if guided:
                free = pad(unconditioned, b, pad_id=vocab.pad_id, side="right")
                unconditional = tuple(free[k].to(device) for k in ("ids", "levels", "attention_mask"))
            with autocast(device, mixed_precision=True):
                out = sample_decode(
                    net,
                    ids,
                    lv,
                    mask,
                    max_new_tokens,
                    candidates=candidates,
                    end_id=vocab.end_id,
                    temperature=recipe.temperature,
                    top_k=recipe.top_k,
                    top_p=recipe.top_p,
                    gamma=recipe.gamma,
                    guidance=recipe.guidance,
                    unconditional=unconditional,
                    level_guidance=recipe.level_guidance,
                    guidance_steps=recipe.guidance_steps,
                    n_genes=None if n_genes is None else torch.as_tensor(n_genes[b], device=device),
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
