"""DropSub: every dropout of the model at one probability, for the sub-branch only."""
from contextlib import ExitStack, contextmanager
from typing import List

from torch import nn

from .audit import DROPOUT_RAN, note, noting_calls
from .hooks import attributes_set

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


def config_rates(model: nn.Module) -> List[str]:
    """The float fields of the model's config named *dropout*: some models read them at forward time and apply
    dropout functionally (Falcon's hidden_dropout and attention_dropout), where no module holds the rate."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "__dict__"):
        return []
    return sorted(k for k, v in vars(config).items() if "dropout" in k and isinstance(v, float))


@contextmanager
def _noting_reads(obj, names, event):
    """While inside, reading one of `names` from `obj` notes `event` (the object's class is swapped for a
    subclass that watches those attributes, and swapped back on exit)."""
    cls, watched = type(obj), frozenset(names)

    class Watched(cls):
        def __getattribute__(self, name):
            if name in watched:
                note(event)
            return super().__getattribute__(name)

    Watched.__name__ = Watched.__qualname__ = cls.__name__
    with attributes_set([(obj, "__class__", Watched)]):
        yield


@contextmanager
def dropout_rate(model: nn.Module, p: float):
    """Set every dropout probability to p inside the block (modules and config rates), restoring each one on exit.
    Each raised rate that the forward really uses is noted for the audit."""
    sites = dropout_sites(model)
    config, names = getattr(model, "config", None), config_rates(model)
    with ExitStack() as stack:
        stack.enter_context(attributes_set([(m, a, p) for m, a in sites] + [(config, n, p) for n in names]))
        stack.enter_context(noting_calls([m for m, _ in sites], DROPOUT_RAN))  # proof a raised rate was used
        if names:
            stack.enter_context(_noting_reads(config, names, DROPOUT_RAN))
        yield len(sites) + len(names)
