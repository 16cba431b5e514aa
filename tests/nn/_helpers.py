"""Small random networks and batches for the tests of :mod:`scmulan.nn` (loaded by file: tests/ is no package)."""

from __future__ import annotations

import torch

from scmulan.nn import CSentenceTransformer, TransformerConfig


def build_net(
    vocab_size: int = 40,
    *,
    n_layer: int = 2,
    n_head: int = 2,
    n_embd: int = 32,
    bias: bool = False,
    std: float = 0.3,
    seed: int = 0,
    gene_bag: bool = False,
) -> CSentenceTransformer:
    """A random network in eval mode, fp32 on CPU.

    The weights are redrawn with a large standard deviation (``std``) so that attention is far from uniform and
    logits are well separated: any leak from a padded position or from another cell then shows up far above the
    tolerances, and greedy choices do not hinge on rounding.
    """
    torch.manual_seed(seed)
    config = TransformerConfig(
        vocab_size=vocab_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd, bias=bias, gene_bag=gene_bag
    )
    net = CSentenceTransformer(config)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "ln" in name and name.endswith("weight"):
                p.normal_(1.0, 0.2)
            else:
                p.normal_(0.0, std)
    return net.eval()


def random_cells(
    n: int, vocab_size: int, *, min_len: int = 2, max_len: int = 12, seed: int = 0, distinct: bool = False
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` cells of random lengths: (ids, levels) 1-d int64 tensors (ids never 0, the end token)."""
    g = torch.Generator().manual_seed(seed)
    cells = []
    for _ in range(n):
        length = int(torch.randint(min_len, max_len + 1, (1,), generator=g))
        if distinct:
            ids = torch.randperm(vocab_size - 1, generator=g)[:length] + 1
        else:
            ids = torch.randint(1, vocab_size, (length,), generator=g)
        levels = torch.randint(0, 11, (length,), generator=g)
        cells.append((ids, levels))
    return cells


def left_pad(
    cells: list[tuple[torch.Tensor, torch.Tensor]], pad_id: int = 3, pad_level: int = 7, extra: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-pad cells into ``(ids, levels, attention_mask)``; pad positions carry junk (``pad_id``/``pad_level``)
    so that a leak of padding into real positions cannot cancel out. ``extra`` adds more padding to every row.
    """
    T = max(len(i) for i, _ in cells) + extra
    B = len(cells)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    levels = torch.full((B, T), pad_level, dtype=torch.long)
    mask = torch.zeros(B, T, dtype=torch.bool)
    for b, (i, lv) in enumerate(cells):
        ids[b, T - len(i) :] = i
        levels[b, T - len(i) :] = lv
        mask[b, T - len(i) :] = True
    return ids, levels, mask
