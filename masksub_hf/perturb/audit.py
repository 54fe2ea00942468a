"""What a perturbation really did in one sub-branch forward: a family's plan is a claim, this is the proof.

Each mechanism notes what reached the model (a raised dropout that ran, a residual block whose update
was dropped, a token-dropping or masking hook that fired) into the record that the trainer opens
around the sub-branch forward; outside a record, noting costs nothing. The trainer then refuses a
step whose perturbation did not happen (`verify`), so a plan that cannot be verified never trains.
"""
from collections import Counter
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterable, Optional

from torch import nn

from .hooks import hooked

_RECORD: ContextVar[Optional[Counter]] = ContextVar("masksub_audit", default=None)

# what each type must have done: the event its mechanisms note
DROPOUT_RAN, UPDATE_DROPPED, INPUT_MASKED = "dropout ran", "residual update dropped", "input masked"
EVIDENCE = {"drop": DROPOUT_RAN, "path": UPDATE_DROPPED, "mask": INPUT_MASKED}


class PerturbationNotApplied(RuntimeError):
    """The sub-branch ran without the perturbation its plan promised (the message says which and why)."""


@contextmanager
def recording():
    """Collect the notes of every mechanism that runs inside: a Counter of events."""
    record = Counter()
    token = _RECORD.set(record)
    try:
        yield record
    finally:
        _RECORD.reset(token)


def note(event: str, module: Optional[nn.Module] = None) -> None:
    record = _RECORD.get()
    if record is not None:
        record[event] += 1
        if module is not None:
            record[(event, id(module))] = 1


@contextmanager
def noting_calls(modules: Iterable[nn.Module], event: str):
    """Forward hooks that note `event` each time one of `modules` runs, while inside."""
    with hooked(modules, lambda m, args, out: note(event, m)):
        yield


def verify(record: Counter, masksub_type: str, ratio: float, model: nn.Module, family) -> None:
    """Raise PerturbationNotApplied when the sub-branch forward shows no trace of masksub_type, or none inside one
    of the parts the family says it must reach (`family`: the models/ family that planned it)."""
    if ratio == 0:
        return
    event = EVIDENCE[masksub_type]
    if record[event]:
        reached = {key[1] for key in record if isinstance(key, tuple) and key[0] == event}
        missed = [part for part, module in family.must_reach(model, masksub_type).items()
                  if not any(id(m) in reached for m in module.modules())]
        if not missed:
            return
        hint = " (no block with a skip connection, so no drop-path slot is ever called)" if masksub_type == "path" else ""
        why = (f"it never reached {' or '.join(missed)}: the sub-branch forward left no trace ('{event}') there{hint}, "
               "so the sub-branch would be perturbed in the other tower only")
    else:
        why = {
            "drop": "none of them ran in the sub-branch forward: the model applies its dropout some other way (for "
                    "instance functionally, at a rate read from its config), so DropSub would change nothing",
            "path": "no residual update was dropped in the sub-branch forward: the modules taken for its residual "
                    "stack never ran (a list that is never called), or each changes the shape of its input, so none "
                    "is a residual block",
            "mask": "the masking never reached the model in the sub-branch forward (its hook did not fire)",
        }[masksub_type]
    others = " or ".join(t for t in EVIDENCE if t != masksub_type)
    raise PerturbationNotApplied(
        f"--masksub_type {masksub_type} did not happen on this {type(model).__name__} ({family.name}): the plan was "
        f"'{family.describe(model, masksub_type, ratio)}', but {why}. Training stopped before this step changed the "
        f"weights. Use --masksub_type {others} (python -m masksub_hf.plan shows what each does), or teach masksub_hf "
        "this model with register_family.")
