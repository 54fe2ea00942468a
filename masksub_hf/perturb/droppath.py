"""PathSub: stochastic depth for the sub-branch only.

Models with drop-path slots of their own (timm; HF Swin, ConvNeXt, BEiT, DINOv2...) get each slot
swapped to a DropPath of rate p: the model's own mechanism. Models without (HF BERT, ViT, decoders)
get a forward hook on each residual block that drops the block's update per sample:
out = x + keep * (block(x) - x) / (1 - p). A block whose output shape differs from its input
(a downsampling stage) is not residual and is left alone.
"""
from contextlib import contextmanager
from typing import Iterable

import torch
from torch import nn

from .audit import UPDATE_DROPPED, note, noting_calls


def _drop_update(x: torch.Tensor, out: torch.Tensor, p: float) -> torch.Tensor:
    keep = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), device=x.device, dtype=x.dtype).bernoulli_(1 - p)
    return x + (out - x) * keep / (1 - p)


@contextmanager
def block_drop_path(blocks: Iterable[nn.Module], p: float):
    """Drop each block's whole residual update per sample with probability p, while inside.

    Yields a counter dict: `applied` counts the block forwards that were really perturbed."""
    counter = {"blocks": 0, "applied": 0}

    def hook(module, args, kwargs, output):
        if not module.training or p == 0:
            return output
        x = args[0] if args else kwargs.get("hidden_states", kwargs.get("x"))
        out = output[0] if isinstance(output, tuple) else output
        if not torch.is_tensor(x) or not torch.is_tensor(out) or x.shape != out.shape:
            return output
        counter["applied"] += 1
        note(UPDATE_DROPPED, module)
        if isinstance(output, tuple):
            return (_drop_update(x, out, p),) + tuple(output[1:])
        return _drop_update(x, out, p)

    handles = [b.register_forward_hook(hook, with_kwargs=True) for b in blocks]
    counter["blocks"] = len(handles)
    try:
        yield counter
    finally:
        for h in handles:
            h.remove()


def _is_drop_path(value) -> bool:
    """timm's DropPath and the HF copies of it (SwinDropPath, ConvNextDropPath, BeitDropPath...)."""
    return isinstance(value, nn.Module) and type(value).__name__.endswith("DropPath") and hasattr(value, "drop_prob")


def drop_path_slots(model: nn.Module):
    """The model's own drop-path slots: attributes named drop_path* holding a DropPath, or what the
    model puts there when its rate is 0 (an Identity in ViTs, ConvNeXts and Swins, None in timm ResNets)."""
    slots = []
    for module in model.modules():
        names = set(module._modules) | {n for n, v in vars(module).items() if v is None}
        for name in sorted(names):
            value = getattr(module, name)
            if name.startswith("drop_path") and (value is None or isinstance(value, nn.Identity) or _is_drop_path(value)):
                slots.append((module, name))
    return slots



@contextmanager
def own_drop_path(model: nn.Module, p: float):
    """Swap every drop-path slot of the model to a DropPath of rate p while inside."""
    from timm.layers import DropPath

    slots = drop_path_slots(model)
    saved = [getattr(m, n) for m, n in slots]
    try:
        for m, n in slots:
            setattr(m, n, DropPath(p))
        with noting_calls([getattr(m, n) for m, n in slots], UPDATE_DROPPED):
            yield len(slots)
    finally:
        for (m, n), v in zip(slots, saved):
            setattr(m, n, v)

