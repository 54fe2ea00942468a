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


def timm_drop_path_slots(model: nn.Module):
    """timm's drop-path slots: attributes named drop_path* holding a DropPath, or what timm puts
    there when the rate is 0 (an Identity in ViTs and ConvNeXts, None in ResNets)."""
    from timm.layers import DropPath

    slots = []
    for module in model.modules():
        names = set(module._modules) | {n for n, v in vars(module).items() if v is None}
        for name in sorted(names):
            value = getattr(module, name)
            if name.startswith("drop_path") and (value is None or isinstance(value, (DropPath, nn.Identity))):
                slots.append((module, name))
    return slots


@contextmanager
def timm_drop_path(model: nn.Module, p: float):
    """Swap every timm drop-path slot to a DropPath of rate p while inside."""
    from timm.layers import DropPath

    slots = timm_drop_path_slots(model)
    saved = [getattr(m, n) for m, n in slots]
    try:
        for m, n in slots:
            setattr(m, n, DropPath(p))
        yield len(slots)
    finally:
        for (m, n), v in zip(slots, saved):
            setattr(m, n, v)
