"""DropSub: every dropout of the model at one probability, for the sub-branch only."""
from contextlib import contextmanager

from torch import nn

# float rates some modules read instead of an nn.Dropout (HF ViT attention, timm classifier heads,
# torch's nn.MultiheadAttention in open_clip towers); only float values count, never modules
FLOAT_RATE_ATTRS = ("attention_dropout", "dropout_prob", "drop_rate", "dropout")


def dropout_sites(model: nn.Module):
    """Every (module, attribute) that holds a dropout probability."""
    sites = []
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            sites.append((module, "p"))
        for attr in FLOAT_RATE_ATTRS:
            if isinstance(getattr(module, attr, None), float):
                sites.append((module, attr))
    return sites


@contextmanager
def dropout_rate(model: nn.Module, p: float):
    """Set every dropout probability to p inside the block, restoring each one on exit."""
    sites = dropout_sites(model)
    saved = [getattr(m, a) for m, a in sites]
    try:
        for m, a in sites:
            setattr(m, a, p)
        yield len(sites)
    finally:
        for (m, a), v in zip(sites, saved):
            setattr(m, a, v)
