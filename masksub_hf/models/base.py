"""What the trainer needs to know about a model family, and the registry that finds it.

A family answers three questions: how to drop tokens (`mask`), where the residual blocks
are (`path`), and which dropouts exist (`drop`, the same for every family). Each method is
a context manager that perturbs the model while inside and yields the sub-branch inputs.
Adding a family is one subclass plus `register_family(MyFamily())`.
"""
from contextlib import contextmanager
from typing import Dict, List

from torch import nn

from ..perturb import block_drop_path, dropout_rate, dropout_sites


class Family:
    name = "family"

    def matches(self, model: nn.Module) -> bool:
        raise NotImplementedError

    def mask(self, model: nn.Module, inputs: Dict, ratio: float):
        raise NotImplementedError(f"{self.name} models cannot be masked; use --masksub_type drop or path.")

    def blocks(self, model: nn.Module) -> List[nn.Module]:
        """The residual blocks that PathSub may skip."""
        return []

    @contextmanager
    def drop(self, model: nn.Module, inputs: Dict, ratio: float):
        with dropout_rate(model, ratio):
            yield inputs

    @contextmanager
    def path(self, model: nn.Module, inputs: Dict, ratio: float):
        with block_drop_path(self.blocks(model), ratio):
            yield inputs

    def check(self, model: nn.Module, masksub_type: str) -> None:
        """Fail at construction, not mid-training, when this model has nothing to perturb."""
        if masksub_type == "drop" and not dropout_sites(model):
            raise ValueError(f"--masksub_type drop: this {type(model).__name__} has no dropout module to raise.")
        if masksub_type == "path" and not self.blocks(model):
            raise ValueError(f"--masksub_type path: found no residual blocks in this {type(model).__name__}.")


FAMILIES: List[Family] = []


def register_family(family: Family, first: bool = True) -> Family:
    """Teach MaskSubTrainer a new model family; registered families are tried before the built-in ones."""
    FAMILIES.insert(0 if first else len(FAMILIES), family)
    return family


def find_family(model: nn.Module) -> Family:
    for family in FAMILIES:
        if family.matches(model):
            return family
    names = ", ".join(f.name for f in FAMILIES)
    raise ValueError(
        f"MaskSubTrainer cannot perturb a {type(model).__name__}: supported families are {names}. "
        "Teach it yours with masksub_hf.register_family(MyFamily()) (subclass masksub_hf.Family; "
        "see masksub_hf/models/base.py), or train it with --masksub_type none."
    )


def longest_module_list(root: nn.Module) -> List[nn.Module]:
    """The model's stack of layers: the longest ModuleList under root (encoder.layer, transformer.layer...)."""
    lists = [m for m in root.modules() if isinstance(m, nn.ModuleList)]
    return list(max(lists, key=len)) if lists else []
