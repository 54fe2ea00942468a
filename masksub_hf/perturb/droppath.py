"""PathSub: stochastic depth for the sub-branch only.

Models with drop-path modules of their own (timm) get them swapped to rate p; models without
(HF BERT, HF ViT) get a forward hook on each residual block that drops the block's update
per sample: out = x + keep * (block(x) - x) / (1 - p).
"""
from contextlib import contextmanager
from typing import Iterable

import torch
from torch import nn


def _drop_update(x: torch.Tensor, out: torch.Tensor, p: float) -> torch.Tensor:
    keep = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), device=x.device, dtype=x.dtype).bernoulli_(1 - p)
    return x + (out - x) * keep / (1 - p)


@contextmanager
def block_drop_path(blocks: Iterable[nn.Module], p: float):
    """Drop each block's whole residual update per sample with probability p, while inside."""

    def hook(module, args, kwargs, output):
        if not module.training or p == 0:
            return output
        x = args[0] if args else kwargs.get("hidden_states", kwargs.get("x"))
        if isinstance(output, tuple):
            return (_drop_update(x, output[0], p),) + tuple(output[1:])
        return _drop_update(x, output, p)

    handles = [b.register_forward_hook(hook, with_kwargs=True) for b in blocks]
    try:
        yield len(handles)
    finally:
        for h in handles:
            h.remove()


@contextmanager
def timm_drop_path(model: nn.Module, p: float):
    """Swap every timm drop-path slot (DropPath or the Identity placed when the rate is 0) to rate p."""
    from timm.layers import DropPath

    slots = [
        (module, name)
        for module in model.modules()
        for name, child in module.named_children()
        if name.startswith("drop_path") and isinstance(child, (DropPath, nn.Identity))
    ]
    saved = [getattr(m, n) for m, n in slots]
    try:
        for m, n in slots:
            setattr(m, n, DropPath(p))
        yield len(slots)
    finally:
        for (m, n), v in zip(slots, saved):
            setattr(m, n, v)
