"""The sub-branch types, in one place: CLI choices, run names, the plan's rows and the messages that list the
types are all derived from here. A new perturbation is an entry here plus the Family method of that name
(models/base.py), which is how the trainer dispatches to it."""

# perturbation -> the name of a run that uses it (the paper's name for the method, lower case)
PERTURBATIONS = {"mask": "masksub", "drop": "dropsub", "path": "pathsub"}
PERTURBATION_TYPES = tuple(PERTURBATIONS)
MASKSUB_TYPES = ("auto",) + PERTURBATION_TYPES + ("none",)  # auto: the measured best (recommend.py); none: Trainer
RUN_NAMES = {"none": "baseline", "auto": "masksub", **PERTURBATIONS}


def listed(types=PERTURBATION_TYPES, last: str = "or") -> str:
    """'mask, drop or path': the types as a message names them."""
    types = list(types)
    return types[0] if len(types) == 1 else f"{', '.join(types[:-1])} {last} {types[-1]}"
