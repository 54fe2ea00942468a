"""The two ways a perturbation reaches into a model for one forward, each in one place.

Every mechanism either hooks modules (`hooked`) or swaps attributes (`attributes_set`) while inside a
`with`, and must leave the model exactly as it found it when the block ends, also when it raises: a
hook or a swapped rate left behind would perturb the main branch of every later step.
"""
from contextlib import contextmanager
from typing import Any, Iterable, List, Tuple, Union

from torch import nn


@contextmanager
def hooked(modules: Union[nn.Module, Iterable[nn.Module]], hook, pre: bool = False, with_kwargs: bool = False):
    """Register `hook` on each of `modules` (a forward hook, or a forward-pre hook with pre=True) while inside.

    A module listed twice is hooked once (a shared block must not be perturbed twice per call). Yields the
    handles, so a caller can count what it hooked; every hook is removed on exit."""
    if isinstance(modules, nn.Module):
        modules = [modules]
    handles = []
    try:
        for module in dict.fromkeys(modules):
            register = module.register_forward_pre_hook if pre else module.register_forward_hook
            handles.append(register(hook, with_kwargs=with_kwargs))
        yield handles
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def attributes_set(triples: Iterable[Tuple[Any, str, Any]]):
    """Set each (obj, name, value) while inside; restore every one on exit, in reverse order.

    An attribute that only shadowed one of its class (a method replaced on an instance) is deleted on exit
    rather than set back, so the instance reads its class again; nn.Module submodules and buffers go back
    through setattr, as the module stores them."""
    saved: List[Tuple[Any, str, Any, bool]] = []
    try:
        for obj, name, value in triples:
            own = name in vars(obj)
            old = getattr(obj, name)
            setattr(obj, name, value)
            shadows = not own and name in vars(obj)  # a new instance attribute in front of the class's
            saved.append((obj, name, old, shadows))
        yield
    finally:
        for obj, name, old, shadows in reversed(saved):
            if shadows:
                delattr(obj, name)
            else:
                setattr(obj, name, old)
