"""Token dropping shared by every family: which tokens the sub-branch keeps, and the one step that drops them.

Every family that drops tokens goes through `keep_indices` (which tokens stay) and `gather_tokens` (the shorter
sequence): image towers through `drop_tokens` (a hook on the embeddings, or a module in the model's own
patch-dropout slot), text batches through text_tokens.shorter_batch.
"""
from contextlib import contextmanager

import torch

from .audit import INPUT_MASKED, note
from .hooks import hooked


def random_scores(shape, device) -> torch.Tensor:
    """Per-token random priorities; one place, so tests can make the masks deterministic."""
    return torch.rand(shape, device=device)


def keep_indices(valid: torch.Tensor, ratio: float, num_prefix: int = 1, always: torch.Tensor = None):
    """Choose, per sample, which tokens to keep after dropping `ratio` of the droppable ones.

    valid: (B, L) bool, True for real tokens (padding is never kept).
    The first `num_prefix` positions (CLS, distillation token...) are always kept and never
    count as droppable; `always` (B, L) bool, when given, names those tokens instead (the pooled
    last token of a left-padded decoder batch is not at a fixed position).
    Returns (index, kept): index (B, K) into the sequence in original order,
    kept (B, K) bool marking the real entries (rows shorter than K are padded at the end).
    """
    batch, length = valid.shape
    valid = valid.bool()
    if always is not None:
        prefix = always.bool() & valid
    else:
        prefix = torch.zeros_like(valid)
        prefix[:, :num_prefix] = True
    droppable = valid & ~prefix
    n_droppable = droppable.sum(1)
    n_keep = (valid & prefix).sum(1) + n_droppable - (n_droppable * ratio).floor().long()
    width = int(n_keep.max())
    scores = random_scores((batch, length), valid.device)
    scores = scores.masked_fill(prefix, -1.0).masked_fill(~valid, 2.0)  # prefix first, padding last
    index = scores.argsort(dim=1)[:, :width]
    kept = torch.arange(width, device=valid.device)[None, :] < n_keep[:, None]
    # restore the original order of the kept tokens, leaving the unused slots at the end
    order = torch.where(kept, index, index + length).argsort(dim=1)
    return index.gather(1, order), kept


def gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x[b, index[b]] for (B, L) or (B, L, D) tensors."""
    if x.dim() == 2:
        return x.gather(1, index)
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))


def drop_tokens(x: torch.Tensor, ratio: float, num_prefix: int = 1, index: torch.Tensor = None) -> torch.Tensor:
    """x (B, L, D) without `ratio` of its tokens after the first `num_prefix` (or with exactly `index` kept), noted
    for the audit: the patch dropping of ViT-like towers, applied after their position embedding."""
    if index is None:
        valid = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        index, _ = keep_indices(valid, ratio, num_prefix=num_prefix)  # no padding: every row keeps as many
    note(INPUT_MASKED)
    return gather_tokens(x, index)


@contextmanager
def dropped_output_tokens(module, ratio: float, num_prefix: int = 1, index: torch.Tensor = None):
    """While inside, `module`'s (B, L, D) output loses `ratio` of its tokens after the first `num_prefix`
    (or keeps exactly `index`): the patch dropping of ViT-like embeddings, after the position embedding."""

    with hooked(module, lambda m, args, output: drop_tokens(output, ratio, num_prefix, index)):
        yield
