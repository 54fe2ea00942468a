"""PathSub: stochastic depth for the sub-branch only.

Models with drop-path slots of their own (timm; HF Swin, ConvNeXt, BEiT, DINOv2...) get each slot
swapped to a DropPath of rate p: the model's own mechanism (`own_drop_path`). Models without get
`drop_path` on the modules a family names, one forward hook per module, in one of two layouts:
- whole residual blocks x -> x + F(x) (HF BERT, ViT, decoders; MobileViT's blocks): the block's update is
  dropped per sample, out = x + keep * (block(x) - x) / (1 - p). A block whose output shape differs from
  its input (a downsampling stage) is not residual and is left alone.
- residual *branches* F of act(F(x) + shortcut(x)) (HF ResNet, RegNet, including the downsampling
  blocks, as timm's ResNets apply drop-path): the branch's output is multiplied by keep / (1 - p).
Where the batch dimension holds several rows per image (MobileViT's transformer layers run on
(batch * patch_area, patches, channels)) the rows of one image share one draw, so the perturbation is
per-sample stochastic depth as in timm.
"""
from contextlib import contextmanager
from typing import Iterable

import torch
from torch import nn

from .audit import UPDATE_DROPPED, note, noting_calls
from .hooks import attributes_set, hooked


def _keep(rows: int, rows_per_sample: int, p: float, like: torch.Tensor) -> torch.Tensor:
    """Per-sample keep factors (0 or 1/(1-p)), repeated over each sample's rows, shaped to broadcast."""
    keep = torch.empty(rows // rows_per_sample, device=like.device, dtype=like.dtype).bernoulli_(1 - p) / (1 - p)
    return keep.repeat_interleave(rows_per_sample).view((rows,) + (1,) * (like.dim() - 1))


@contextmanager
def drop_path(modules: Iterable[nn.Module], p: float, branch: bool = False, rows_per_sample: int = 1):
    """Stochastic depth at rate p on each of `modules` while inside (the layouts: see the module docstring).

    branch=False: each module is a whole block (its input is args[0], or the hidden_states / x keyword; a tuple
    output has its first element perturbed); branch=True: each is a residual branch, whatever its shapes.
    Yields {"modules", "applied"}: `applied` counts the forwards really perturbed, so a caller can prove the
    perturbation reached the model."""
    counter = {"modules": 0, "applied": 0}

    def hook(module, args, kwargs, output):
        if not module.training or p == 0:
            return output
        out = output[0] if isinstance(output, tuple) else output
        if not torch.is_tensor(out):
            return output
        x = None if branch else args[0] if args else kwargs.get("hidden_states", kwargs.get("x"))
        if not branch and (not torch.is_tensor(x) or x.shape != out.shape):
            return output  # not a residual block (a downsampling stage): left alone
        keep = _keep(out.shape[0], rows_per_sample, p, out)
        new = out * keep if branch else x + (out - x) * keep
        counter["applied"] += 1
        note(UPDATE_DROPPED, module)
        return (new,) + tuple(output[1:]) if isinstance(output, tuple) else new

    with hooked(modules, hook, with_kwargs=True) as handles:
        counter["modules"] = len(handles)
        yield counter


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
    swapped = [(m, n, DropPath(p)) for m, n in slots]
    with attributes_set(swapped), noting_calls([new for _, _, new in swapped], UPDATE_DROPPED):
        yield len(slots)
