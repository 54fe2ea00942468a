"""Keep BatchNorm running statistics out of the sub-branch's reach."""
from contextlib import contextmanager

from torch import nn

from .hooks import attributes_set

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
    copies = [(m, n, getattr(m, n).clone()) for m in norms for n in STATS if getattr(m, n, None) is not None]
    with attributes_set(copies):
        yield len(norms)
