"""The MaskSub knobs, as TrainingArguments fields so one HfArgumentParser reads them all."""
from dataclasses import dataclass, field, fields
from types import SimpleNamespace
from typing import Optional

from transformers import TrainingArguments

from .losses import RELAXED_LOSSES as LOSS_REGISTRY
from .nonfinite import NONFINITE_MODES, validate_nonfinite
from .sub_types import MASKSUB_TYPES, types_help

DEFAULT_RATIO = 0.5  # the paper's, for mask, drop and path alike
RELAXED_LOSSES = ("auto",) + tuple(LOSS_REGISTRY)


def validate(masksub_type: str, masksub_ratio: float, masksub_loss: str = "auto") -> None:
    """Raise a ValueError that names the bad value and the accepted ones."""
    if masksub_type not in MASKSUB_TYPES:
        raise ValueError(f"--masksub_type {masksub_type!r} is unknown; choose one of {', '.join(MASKSUB_TYPES)}.")
    if masksub_ratio is None and masksub_type == "auto":
        return validate_loss(masksub_loss)
    if not isinstance(masksub_ratio, (int, float)) or not 0.0 <= masksub_ratio < 1.0:
        raise ValueError(
            f"--masksub_ratio must be in [0, 1) (the share of tokens dropped, or the dropout / drop-path "
            f"probability of the sub-branch); got {masksub_ratio!r}. The paper's default is 0.5."
        )
    validate_loss(masksub_loss)


def validate_loss(masksub_loss: str) -> None:
    if masksub_loss not in RELAXED_LOSSES:
        raise ValueError(f"--masksub_loss {masksub_loss!r} is unknown; choose one of {', '.join(RELAXED_LOSSES)}.")


@dataclass
class MaskSubConfig(TrainingArguments):
    """TrainingArguments plus the sub-branch settings (the convention TRL uses for its trainers)."""

    masksub_type: str = field(
        default="auto",
        metadata={
            "help": types_help(),
            "choices": list(MASKSUB_TYPES),
        },
    )
    masksub_ratio: Optional[float] = field(
        default=None,
        metadata={
            "help": "Strength of the sub-branch perturbation in [0, 1): the share of tokens dropped for 'mask', the "
            "dropout or drop-path probability for 'drop' and 'path'. Default: auto's choice, else the paper's 0.5; "
            "given with 'auto', it overrides auto's ratio (auto still picks the type)."
        },
    )
    masksub_loss: str = field(
        default="auto",
        metadata={
            "help": "Loss matching the sub-branch to the detached main prediction: 'softmax' (soft-target cross-"
            "entropy), 'sigmoid' (BCE to sigmoid targets), 'mse' (regression: squared error), 'huber' (regression: "
            "smooth-L1, beta 1), or 'auto' to choose from the "
            "model's config (problem_type, num_labels); 'clip' (both directions of an image x text similarity matrix) "
            "is what CLIP models pick themselves, 'siglip' (pairwise sigmoid BCE over that matrix) what SigLIP models pick.",
            "choices": list(RELAXED_LOSSES),
        },
    )
    masksub_plain: bool = field(
        default=False,
        metadata={
            "help": "Analysis baseline, not a method: apply the masksub_type perturbation to the main branch itself and "
            "run no sub-branch (the paper's plain-masking row, which it shows hurts)."
        },
    )

    masksub_nonfinite: Optional[str] = field(
        default=None,
        metadata={
            "help": "What to do when a loss (main or sub-branch) or the gradient norm is inf or NaN (default: 'stop' "
            "with a sub-branch, 'off' for masksub_type none, which is Trainer exactly): 'stop' ends "
            "training at once with an error naming the step and the branch, before that step changes the weights or "
            "writes a checkpoint (the last checkpoint stays as it was); 'skip', for long runs, drops that optimizer "
            "step (weights and optimizer state unchanged), counts it in the logs as nonfinite_skipped, and stops "
            "after --masksub_nonfinite_max_skips skipped steps in a row; 'off' checks nothing (Trainer trains on and "
            "filters the logged loss, logging_nan_inf_filter).",
            "choices": list(NONFINITE_MODES),
        },
    )
    masksub_nonfinite_max_skips: int = field(
        default=10,
        metadata={"help": "With --masksub_nonfinite skip: stop after this many skipped optimizer steps in a row."},
    )

    def __post_init__(self):
        if self.masksub_ratio is None and self.masksub_type != "auto":
            self.masksub_ratio = DEFAULT_RATIO
        validate(self.masksub_type, self.masksub_ratio, self.masksub_loss)
        validate_nonfinite(self.masksub_nonfinite, self.masksub_nonfinite_max_skips)
        super().__post_init__()


PLAIN_TRAINING_ARGUMENTS = {"masksub_type": "mask", "masksub_ratio": DEFAULT_RATIO}  # the paper's method


def settings_of(args):
    """The MaskSub fields of a Trainer's args: MaskSubConfig's own, or for plain TrainingArguments MaskSubConfig's
    defaults with the paper's type and ratio (README: 'Given plain TrainingArguments...')."""
    if isinstance(args, MaskSubConfig):
        return args
    defaults = {f.name: f.default for f in fields(MaskSubConfig) if f.name.startswith("masksub_")}
    return SimpleNamespace(**{**defaults, **PLAIN_TRAINING_ARGUMENTS})
