"""The c-sentence transformer: a decoder-only GPT over (entity, value) pairs.

Each position carries an entity id (gene, metadata category, task prompt, ``<E>``) and a value (expression level
0..10). The input is the sum of an entity embedding and a value embedding; there is **no positional embedding**,
so order reaches the network only through the causal mask and a padded cell gives the same outputs as the
cell alone. Blocks are pre-LayerNorm with causal scaled-dot-product attention and a tanh-GELU MLP; two untied
heads read the final hidden state: entity logits (which entity comes next) and values (one level per entity).
With ``gene_bag`` the final hidden state also gets a linear summary of the genes seen so far (a running,
level-weighted sum of learnt gene vectors), so that the heads include a linear model of the gene levels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import TransformerConfig


class KVCache:
    """Keys and values of every layer for the positions seen so far, plus which of them are real tokens.

    Storage is preallocated along the time axis and doubles when full, so a decoding step writes one position
    instead of concatenating the whole history. ``select`` keeps a subset of the batch rows (used to drop cells
    that finished decoding).
    """

    def __init__(self, n_layer: int, capacity: int = 64) -> None:
        self.n_layer = n_layer
        self.capacity = capacity
        self.length = 0
        self.keys: list[Tensor | None] = [None] * n_layer
        self.values: list[Tensor | None] = [None] * n_layer
        self.key_mask: Tensor | None = None  # (B, capacity) bool: True where the position is a real token
        self.gene_bag: Tensor | None = None  # (B, n_embd + 1): gene-bag sum and gene count so far (gene_bag=True)

    def _grow(self, needed: int) -> None:
        new_capacity = max(needed, 2 * self.capacity)
        for i in range(self.n_layer):
            for store in (self.keys, self.values):
                old = store[i]
                if old is not None:
                    new = old.new_empty(*old.shape[:2], new_capacity, old.shape[3])  # read only where written
                    new[:, :, : self.length] = old[:, :, : self.length]
                    store[i] = new
        if self.key_mask is not None:
            new_mask = self.key_mask.new_zeros(self.key_mask.shape[0], new_capacity)
            new_mask[:, : self.length] = self.key_mask[:, : self.length]
            self.key_mask = new_mask
        self.capacity = new_capacity

    def reserve(self, n_new: int) -> None:
        """Make room for ``n_new`` more positions; called once per forward, before any layer writes."""
        if self.length + n_new > self.capacity:
            self._grow(self.length + n_new)

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write the new keys/values ``(B, nh, T, hs)`` of one layer; return all keys/values so far."""
        start, stop = self.length, self.length + k.shape[2]
        if self.keys[layer] is None:
            shape = (k.shape[0], k.shape[1], self.capacity, k.shape[3])
            self.keys[layer] = k.new_empty(shape)  # a position is read only after it was written
            self.values[layer] = v.new_empty(shape)
        self.keys[layer][:, :, start:stop] = k
        self.values[layer][:, :, start:stop] = v
        return self.keys[layer][:, :, :stop], self.values[layer][:, :, :stop]

    def past_mask(self, batch_size: int, device: torch.device) -> Tensor:
        """Key mask ``(B, length)`` of the positions already in the cache."""
        if self.key_mask is None:
            return torch.ones(batch_size, self.length, dtype=torch.bool, device=device)
        return self.key_mask[:, : self.length]

    def advance(self, new_mask: Tensor) -> None:
        """Record ``T`` new positions (after every layer was updated) with their key mask ``(B, T)``."""
        batch_size, n_new = new_mask.shape
        if self.key_mask is None:
            self.key_mask = torch.zeros(batch_size, self.capacity, dtype=torch.bool, device=new_mask.device)
        self.key_mask[:, self.length : self.length + n_new] = new_mask
        self.length += n_new

    def select(self, rows: Tensor) -> None:
        """Keep only the batch rows ``rows`` (an index tensor), in that order."""
        for store in (self.keys, self.values):
            for i, t in enumerate(store):
                if t is not None:
                    store[i] = t.index_select(0, rows)
        if self.key_mask is not None:
            self.key_mask = self.key_mask.index_select(0, rows)
        if self.gene_bag is not None:
            self.gene_bag = self.gene_bag.index_select(0, rows)


_COMPILED_FLEX = None


def _flex_attention(device: torch.device):
    """FlexAttention, compiled on CUDA (uncompiled it materialises the full score matrix; CPU runs it eagerly)."""
    global _COMPILED_FLEX  # compiled once per process
    from torch.nn.attention.flex_attention import flex_attention

    if device.type != "cuda":
        return flex_attention
    if _COMPILED_FLEX is None:
        _COMPILED_FLEX = torch.compile(flex_attention)  # packed shapes vary: dynamic after the first change
    return _COMPILED_FLEX


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention through :func:`torch.nn.functional.scaled_dot_product_attention`."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, mask: Tensor | None, cache: KVCache | None, layer: int) -> Tensor:
        """Attend over ``x`` ``(B, T, C)`` (and the cached positions); ``mask=None`` means plain causal."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, nh, T_past + T, hs)
        if mask is not None and not isinstance(mask, Tensor):  # a FlexAttention BlockMask (packed rows, CUDA)
            y = _flex_attention(q.device)(q, k, v, block_mask=mask)
            y = y.transpose(1, 2).contiguous().view(B, T, C)
            return self.resid_dropout(self.proj(y))
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=mask is None,
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble the heads
        return self.resid_dropout(self.proj(y))


#: 2 * sqrt(2 / pi): tanh(u) = 2 sigmoid(2u) - 1 turns the tanh-GELU into x * sigmoid(2u)
_TWO_SQRT_2_OVER_PI = 2.0 * math.sqrt(2.0 / math.pi)


def tanh_gelu(x: Tensor) -> Tensor:
    """GELU with the tanh approximation, ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``.

    Parameters
    ----------
    x
        Pre-activations, any shape.

    Returns
    -------
    Tensor
        ``F.gelu(x, approximate="tanh")``. In float32 or float64 on the CPU without autograd (inference) it is
        computed as ``x * sigmoid(2u)`` with ``u = sqrt(2/pi) (x + 0.044715 x^3)``, the same function (since
        ``1 + tanh(u) = 2 sigmoid(2u)``) in four passes over one new tensor (``addcmul``, then three in place),
        which on this project's CPUs (AVX2, AVX-512) take less time than torch's CPU kernel for the tanh form
        (benchmarks/README.md, "The GELU on a CPU"). The two differ by float32 rounding (at most 1e-6 of
        ``max(1, |x|)``). Training, GPUs and reduced precision use torch's kernel.
    """
    if (
        x.device.type != "cpu"
        or x.dtype not in (torch.float32, torch.float64)
        or (x.requires_grad and torch.is_grad_enabled())
    ):
        return F.gelu(x, approximate="tanh")
    # 2u = x (c + 0.044715 c x^2) with c = 2 sqrt(2/pi): one fused multiply-add pass (addcmul), then one more multiply
    u = torch.addcmul(x.new_tensor(_TWO_SQRT_2_OVER_PI), x, x, value=0.044715 * _TWO_SQRT_2_OVER_PI).mul_(x)
    return u.sigmoid_().mul_(x)


#: Whether this torch has oneDNN's fused linear + tanh-GELU (None: not probed yet; see _fused_linear_gelu_available)
_FUSED_LINEAR_GELU: bool | None = None


def _fused_linear_gelu_available() -> bool:
    """Probe once whether ``torch.ops.mkldnn._linear_pointwise`` computes ``F.gelu(linear(x), approximate="tanh")``.

    It is the kernel torch's own compiler emits for this pattern on a CPU, not a public API, so it is checked on a
    small input against the unfused function instead of trusted: a torch without it (a build without oneDNN, an
    older or newer version) keeps the unfused path.
    """
    global _FUSED_LINEAR_GELU  # probed once per process
    if _FUSED_LINEAR_GELU is None:
        try:
            gen = torch.Generator().manual_seed(0)
            x, w, b = (torch.randn(shape, generator=gen) for shape in ((4, 8), (16, 8), (16,)))
            fused = torch.ops.mkldnn._linear_pointwise(x, w, b, "gelu", [], "tanh")
            _FUSED_LINEAR_GELU = torch.allclose(fused, F.gelu(F.linear(x, w, b), approximate="tanh"), atol=1e-5)
        except (AttributeError, RuntimeError, NotImplementedError):
            _FUSED_LINEAR_GELU = False
    return _FUSED_LINEAR_GELU


def linear_tanh_gelu(linear: nn.Module, x: Tensor) -> Tensor:
    """``tanh_gelu(linear(x))``: a linear layer followed by the tanh-approximate GELU.

    Parameters
    ----------
    linear
        The layer (an :class:`torch.nn.Linear`, or any module mapping ``x`` to the GELU's input, such as a
        dynamically quantised linear layer).
    x
        Inputs ``(..., in_features)``.

    Returns
    -------
    Tensor
        ``F.gelu(linear(x), approximate="tanh")`` ``(..., out_features)``. At float32 CPU inference (no autograd)
        with a plain :class:`~torch.nn.Linear` the GELU runs inside oneDNN's matrix product, on each block of the
        output while it is in the cache, instead of in further passes over the whole output: annotation 1.05-1.10x as
        fast at widths 64 and 128 (benchmarks/README.md, "The GELU on a CPU"). The result is the same function
        within float32 rounding. Elsewhere (training, GPUs, other precisions, a torch without the
        kernel) it is :func:`tanh_gelu` of the layer's output.
    """
    if (
        type(linear) is nn.Linear
        and x.device.type == "cpu"
        and x.dtype == linear.weight.dtype == torch.float32
        and not torch.is_grad_enabled()
        and _fused_linear_gelu_available()
    ):
        return torch.ops.mkldnn._linear_pointwise(x, linear.weight, linear.bias, "gelu", [], "tanh")
    return tanh_gelu(linear(x))


class TanhGELU(nn.Module):
    """:func:`tanh_gelu` as a module (no parameters: a drop-in for ``nn.GELU(approximate="tanh")``)."""

    def forward(self, x: Tensor) -> Tensor:
        """Elementwise :func:`tanh_gelu`."""
        return tanh_gelu(x)


class MLP(nn.Module):
    """Position-wise feed-forward block of width ``4 * n_embd`` with tanh-approximate GELU."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, T, C) -> (B, T, C)``."""
        return self.dropout(self.proj(linear_tanh_gelu(self.fc, x)))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: Tensor, mask: Tensor | None, cache: KVCache | None, layer: int) -> Tensor:
        """One block over ``x`` ``(B, T, C)``."""
        x = x + self.attn(self.ln_1(x), mask, cache, layer)
        return x + self.mlp(self.ln_2(x))


class CSentenceTransformer(nn.Module):
    """Decoder-only transformer over c-sentences with an entity head and a value head.

    Parameters
    ----------
    config
        Sizes; see :class:`~scmulan.nn.TransformerConfig`.

    Examples
    --------
    >>> import torch
    >>> from scmulan.nn import CSentenceTransformer, TransformerConfig
    >>> net = CSentenceTransformer(TransformerConfig.from_preset("tiny", vocab_size=100))
    >>> ids, levels = torch.randint(0, 100, (2, 7)), torch.randint(0, 11, (2, 7))
    >>> hidden = net(ids, levels)  # (2, 7, 64)
    >>> entity_logits, values = net.heads(hidden[:, -1])  # (2, 100) each
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.entity_embedding = nn.Embedding(config.vocab_size, config.n_embd)
        self.value_embedding = nn.Embedding(config.n_levels, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        # The heads are untied from the entity embedding, as in the released checkpoint.
        self.entity_head = nn.Linear(config.n_embd, config.vocab_size, bias=config.head_bias)
        self.value_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # generation_objective="next": a categorical level head (levels 1..n_levels-1) read from the hidden state and
        # the embedding of the gene just chosen, so that a gene's level is sampled given which gene it is.
        self.level_head = (
            nn.Sequential(
                nn.Linear(2 * config.n_embd, config.n_embd),
                TanhGELU(),
                nn.Linear(config.n_embd, max(config.n_levels - 1, 1)),
            )
            if config.generation_objective == "next"
            else None
        )
        # gene_bag=True: a linear summary of the genes seen so far, added to the final hidden state (see _gene_bag)
        self.gene_bag = nn.Embedding(config.vocab_size, config.n_embd) if config.gene_bag else None
        self.apply(self._init_weights)
        if self.gene_bag is not None:  # starts silent: at initialisation the network is the one without the bag
            nn.init.zeros_(self.gene_bag.weight)
        # GPT-2 style: scale the residual output projections by 1/sqrt(2 * n_layer).
        for name, p in self.named_parameters():
            if name.endswith(("attn.proj.weight", "mlp.proj.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        if config.head_bias:  # start at the log-odds of one entity among |V| (see TransformerConfig.head_bias)
            nn.init.constant_(self.entity_head.bias, -math.log(max(config.vocab_size - 1, 1)))  # |V| = 1: 0

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # Linear and Embedding weights ~ N(0, 0.02), biases zero, LayerNorm weight one.
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return self.entity_embedding.weight.device

    def num_parameters(self) -> int:
        """Number of parameters."""
        return sum(p.numel() for p in self.parameters())

    def new_cache(self, capacity: int = 64) -> KVCache:
        """An empty key/value cache for :meth:`forward`, with room for ``capacity`` positions before it grows."""
        return KVCache(self.config.n_layer, capacity)

    def forward(
        self,
        ids: Tensor,
        levels: Tensor,
        attention_mask: Tensor | None = None,
        cache: KVCache | None = None,
        *,
        padding: str = "left",
        document: Tensor | None = None,
    ) -> Tensor:
        """Final hidden states (after the last LayerNorm).

        Parameters
        ----------
        ids
            Entity ids ``(B, T)``.
        levels
            Values ``(B, T)`` in ``0 .. n_levels - 1``.
        attention_mask
            ``(B, T)``, True for real tokens. Padded positions are never attended to
            and their own outputs are meaningless. Leave ``None`` for unpadded or right-padded batches (plain causal
            attention, which lets SDPA use its fused kernels).
        cache
            A :class:`KVCache`: the keys/values of these ``T`` positions are appended to it, and the new positions
            attend to everything already in it.
        padding
            Where the padding of ``attention_mask`` is. ``"left"``: an explicit mask keeps padding out of attention.
            ``"right"`` (real tokens first): under a causal mask a real position never sees the padding after it, and
            there is no positional embedding, so plain causal attention is exact and SDPA can use its fused kernels;
            the padding is only recorded in ``cache`` so that later cached steps ignore it. Only for a first pass
            (empty cache).
        document
            ``(B, T)`` integer id of the sentence each position belongs to, for rows that pack several sentences
            end to end (:func:`~scmulan.sentence.pack_batch`; ``-1`` at padding): attention is causal within a
            sentence and never crosses sentences (block-diagonal causal). FlexAttention with a block mask on CUDA
            (no dropout), a dense boolean mask elsewhere. Training only: not with ``attention_mask`` or ``cache``.

        Returns
        -------
        Hidden states ``(B, T, n_embd)``.
        """
        B, T = ids.shape
        if attention_mask is not None:
            ids = ids.masked_fill(~attention_mask, 0)  # padding never indexes outside the table
            levels = levels.masked_fill(~attention_mask, 0)
        x = self.drop(self.entity_embedding(ids) + self.value_embedding(levels))  # (B, T, C)
        right_padded = padding == "right" and (cache is None or cache.length == 0)
        if document is not None:
            if attention_mask is not None or cache is not None:
                msg = "`document` (packed rows) takes neither `attention_mask` nor `cache`: pass the packed ids alone."
                raise ValueError(msg)
            mask = self._document_mask(document, flex=self._use_flex(ids.device))
        else:
            mask = self._attention_mask(B, T, None if right_padded else attention_mask, cache, ids.device)
        if cache is not None:
            cache.reserve(T)
        for layer, block in enumerate(self.blocks):
            x = block(x, mask, cache, layer)
        hidden = self.ln_f(x)
        if self.gene_bag is not None:
            hidden = hidden + self._gene_bag(ids, levels, cache, document).to(hidden.dtype)
        if cache is not None:
            new = (
                attention_mask if attention_mask is not None else torch.ones(B, T, dtype=torch.bool, device=ids.device)
            )
            cache.advance(new)
        return hidden

    def _gene_bag(self, ids: Tensor, levels: Tensor, cache: KVCache | None, document: Tensor | None) -> Tensor:
        """``(B, T, C)``: at each position, ``sum_g level_g * W[g] / sqrt(n)`` over the ``n`` genes seen so far.

        A linear path from the cell's expression levels to the heads (the "wide" part of a wide-and-deep network):
        the label logits then include a logistic regression on the gene levels, which the attention stack alone
        does not represent well from a few hundred cells. Only genes carry levels > 0, so prompt, metadata and
        padding tokens add nothing; the sum is causal (it runs along the sentence, within each packed sentence, and
        continues from ``cache``). During training whole genes are dropped from the bag with the network's dropout.
        """
        lv = levels.to(self.gene_bag.weight.dtype)[..., None]  # (B, T, 1)
        is_gene = (levels > 0).to(lv.dtype)[..., None]
        if self.training and self.config.dropout > 0:
            lv = F.dropout(lv, self.config.dropout, training=True)
        terms = self.gene_bag(ids) * lv  # (B, T, C)
        total, count = terms.cumsum(1), is_gene.cumsum(1)
        if document is not None:  # restart both sums at the first position of each packed sentence
            first = torch.ones_like(document, dtype=torch.bool)
            first[:, 1:] = document[:, 1:] != document[:, :-1]
            start = torch.where(first, torch.arange(document.shape[1], device=ids.device), 0).cummax(1).values
            total = total - (total - terms).gather(1, start[..., None].expand_as(total))
            count = count - (count - is_gene).gather(1, start[..., None])
        if cache is not None:
            if cache.gene_bag is not None:
                total = total + cache.gene_bag[:, None, :-1]
                count = count + cache.gene_bag[:, None, -1:]
            cache.gene_bag = torch.cat([total[:, -1], count[:, -1]], dim=-1)
        return total / count.clamp(min=1).sqrt()

    @staticmethod
    def _attention_mask(
        B: int, T: int, attention_mask: Tensor | None, cache: KVCache | None, device: torch.device
    ) -> Tensor | None:
        """Boolean SDPA mask ``(B, 1, T, T_past + T)``; ``None`` means plain causal attention."""
        past = cache.length if cache is not None else 0
        if attention_mask is None and past == 0:
            return None
        new = attention_mask if attention_mask is not None else torch.ones(B, T, dtype=torch.bool, device=device)
        keys_valid = new if past == 0 else torch.cat([cache.past_mask(B, device), new], dim=1)  # (B, T_past + T)
        q_pos = torch.arange(T, device=device)[:, None] + past
        k_pos = torch.arange(past + T, device=device)[None, :]
        causal = k_pos <= q_pos  # (T, T_past + T)
        # A query always sees itself: padded rows then attend only to themselves and stay finite (a fully masked
        # row would give NaN, and 0 * NaN would leak into real rows).
        mask = (keys_valid[:, None, :] & causal[None]) | (k_pos == q_pos)[None]
        return mask[:, None]  # (B, 1, T, T_past + T)

    def _use_flex(self, device: torch.device) -> bool:
        """FlexAttention for packed rows: on CUDA, without attention dropout (flex_attention has none)."""
        return device.type == "cuda" and not (self.training and self.config.dropout > 0)

    @staticmethod
    def _document_mask(document: Tensor, *, flex: bool = False) -> Tensor | object:
        """Block-diagonal causal mask of packed rows: position ``q`` sees ``k <= q`` of the same document.

        A dense boolean SDPA mask ``(B, 1, T, T)`` (a padding position sees itself, so no row is fully masked), or
        with ``flex`` a FlexAttention ``BlockMask`` that skips the blocks between documents.
        """
        B, T = document.shape
        if flex:
            from torch.nn.attention.flex_attention import create_block_mask

            def block_causal(b: Tensor, h: Tensor, q: Tensor, k: Tensor) -> Tensor:
                return (document[b, q] == document[b, k]) & (k <= q)

            return create_block_mask(block_causal, B, None, T, T, device=document.device)
        pos = torch.arange(T, device=document.device)
        causal = pos[None, :] <= pos[:, None]  # (T, T): key <= query
        same = document[:, :, None] == document[:, None, :]  # (B, T, T)
        return ((same & causal) | torch.eye(T, dtype=torch.bool, device=document.device))[:, None]

    def heads(self, hidden: Tensor) -> tuple[Tensor, Tensor]:
        """Entity logits and values ``(..., vocab_size)`` for hidden states ``(..., n_embd)``."""
        return self.entity_head(hidden), self.value_head(hidden)

    def level_logits(self, hidden: Tensor, genes: Tensor) -> Tensor:
        """Logits of levels ``1..n_levels-1`` ``(..., n_levels - 1)`` of ``genes`` ``(...)`` chosen after ``hidden``.

        Only for ``generation_objective="next"`` (the level head); level ``k`` is column ``k - 1``.
        """
        if self.level_head is None:
            msg = "This network has no level head (generation_objective='set'); its values come from `heads`."
            raise AttributeError(msg)
        return self.level_head(torch.cat([hidden, self.entity_embedding(genes).to(hidden.dtype)], dim=-1))
