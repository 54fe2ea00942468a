"""Keep BatchNorm running statistics out of the sub-branch's reach."""
from contextlib import contextmanager

from torch import nn

STATS = ("running_mean", "running_var", "num_batches_tracked")


@contextmanager
def frozen_norm_stats(model: nn.Module):
    """Let the sub-branch's BatchNorms update throwaway copies of their running statistics.

    In training mode a BatchNorm updates its running statistics at each forward; those
    statistics are what inference normalises with, so they must describe the clean inputs,
    not the masked or dropped-out copies that the sub-branch sees. The copies are swapped in
    rather than copied back in place, since the backward pass still holds the tensors it saw.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats]
    saved = [{n: getattr(m, n) for n in STATS if getattr(m, n, None) is not None} for m in norms]
    try:
        for m, buffers in zip(norms, saved):
            for name, tensor in buffers.items():
                setattr(m, name, tensor.clone())
        yield len(norms)
    finally:
        for m, buffers in zip(norms, saved):
            for name, tensor in buffers.items():
                setattr(m, name, tensor)
