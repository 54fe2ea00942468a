"""PathSub for residual layouts that `block_drop_path` cannot see: residual *branches* (HF ResNet,
RegNet: relu(branch(x) + shortcut(x)), including the downsampling blocks, as timm's ResNets apply
drop-path), and blocks whose batch dimension holds several rows per image (MobileViT's transformer
layers run on (batch * patch_area, patches, channels)). The rows of one image share one draw, so
the perturbation is per-sample stochastic depth as in timm.
"""
from contextlib import contextmanager
from typing import Iterable

import torch
from torch import nn

from .audit import UPDATE_DROPPED, note


def _keep(rows: int, rows_per_sample: int, p: float, like: torch.Tensor) -> torch.Tensor:
    """Per-sample keep factors (0 or 1/(1-p)), repeated over each sample's rows, shaped to broadcast."""
    samples = rows // rows_per_sample
    keep = torch.empty(samples, device=like.device, dtype=like.dtype).bernoulli_(1 - p) / (1 - p)
    return keep.repeat_interleave(rows_per_sample).view((rows,) + (1,) * (like.dim() - 1))


@contextmanager
def residual_drop_path(modules: Iterable[nn.Module], p: float, branch: bool, rows_per_sample: int = 1):
    """Stochastic depth at rate p on each module while inside.

    branch=True: each module is a residual branch F of out = act(F(x) + shortcut(x)); its output is
    multiplied per sample by 0 or 1/(1-p). branch=False: each module is a whole block x -> x + F(x)
    (same shape); its update is dropped per sample. Yields {"modules", "applied"}: `applied` counts
    the forwards really perturbed, so a caller can prove the perturbation reached the model.
    """
    counter = {"modules": 0, "applied": 0}

    def hook(module, args, output):
        if not module.training or p == 0:
            return output
        counter["applied"] += 1
        note(UPDATE_DROPPED, module)
        keep = _keep(output.shape[0], rows_per_sample, p, output)
        if branch:
            return output * keep
        x = args[0]
        return x + (output - x) * keep

    handles = [m.register_forward_hook(hook) for m in modules]
    counter["modules"] = len(handles)
    try:
        yield counter
    finally:
        for h in handles:
            h.remove()
