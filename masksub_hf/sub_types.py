"""The sub-branch types, in one place: CLI choices and help, run names, the plan's rows and columns and the messages
that list the types are all derived from here. A new perturbation is an entry here plus the Family method of that
name and its `<name>_doc` line (models/base.py), which is how the trainer dispatches to it and the README table
describes it."""
from typing import NamedTuple


class Perturbation(NamedTuple):
    run_name: str  # the paper's name for the method, lower case: the run's folder in a comparison
    help: str  # what the sub-branch does, for --help


PERTURBATIONS = {
    "mask": Perturbation("masksub", "drops a share of the input tokens (MaskSub)"),
    "drop": Perturbation("dropsub", "raises every dropout (DropSub)"),
    "path": Perturbation("pathsub", "adds drop-path to every residual block (PathSub)"),
}
PERTURBATION_TYPES = tuple(PERTURBATIONS)
MASKSUB_TYPES = ("auto",) + PERTURBATION_TYPES + ("none",)  # auto: the measured best (recommend.py); none: Trainer
RUN_NAMES = {"none": "baseline", "auto": "masksub", **{t: p.run_name for t, p in PERTURBATIONS.items()}}


def listed(types=PERTURBATION_TYPES, last: str = "or") -> str:
    """'mask, drop or path': the types as a message names them."""
    types = list(types)
    return types[0] if len(types) == 1 else f"{', '.join(types[:-1])} {last} {types[-1]}"


def types_help() -> str:
    """--masksub_type's help, one clause per type."""
    each = ", ".join(f"'{t}' {p.help}" for t, p in PERTURBATIONS.items())
    return ("Sub-branch perturbation: 'auto' (default) takes the setting bench/quality.py measured best for the "
            "model's kind and head (logged in one line; python -m masksub_hf.plan MODEL shows it), "
            f"{each}, 'none' trains as plain Trainer does.")
