"""Which checkpoint a run can resume from: the newest COMPLETE one.

Trainer writes a checkpoint in a fixed order (model, optimizer, scheduler, RNG states) and
`trainer_state.json` last, so a process killed while saving leaves a directory without it (or
with a truncated one). Trainer's own `get_last_checkpoint` picks that directory by its number,
and resuming from it crashes. Here a checkpoint counts only when its trainer_state.json parses
and its model weights are there; the newer, incomplete ones are reported so the user knows why
they were passed over.
"""
import json
import logging
import os
import re
from typing import List, Optional, Tuple

logger = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json", "adapter_model.safetensors", "adapter_model.bin")


def incomplete_reason(checkpoint: str) -> Optional[str]:
    """None when `checkpoint` can be resumed from, else why not (in words)."""
    state = os.path.join(checkpoint, TRAINER_STATE)
    if not os.path.isfile(state):
        return f"it has no {TRAINER_STATE} (the save was interrupted)"
    try:
        with open(state, encoding="utf-8") as f:
            json.load(f)
    except (OSError, ValueError):
        return f"its {TRAINER_STATE} is truncated or unreadable (the save was interrupted)"
    names = set(os.listdir(checkpoint))
    if not names & set(WEIGHT_FILES) and not any(n.startswith("pytorch_model_fsdp") or n.startswith("global_step")
                                                 for n in names):
        return "it holds no model weights"
    return None


def checkpoints(output_dir: str) -> List[Tuple[int, str]]:
    """(step, path) of every checkpoint-N directory in output_dir, oldest first."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        match = _CHECKPOINT.match(name)
        if match and os.path.isdir(os.path.join(output_dir, name)):
            found.append((int(match.group(1)), os.path.join(output_dir, name)))
    return sorted(found)


def last_complete_checkpoint(output_dir: str, log: bool = True) -> Optional[str]:
    """The newest checkpoint that can be resumed from, or None. With `log`, each newer checkpoint
    that is skipped is reported with the reason, and so is the one chosen."""
    skipped = []
    for _, path in reversed(checkpoints(output_dir)):
        reason = incomplete_reason(path)
        if reason is None:
            if log:
                for bad, why in skipped:
                    logger.warning("Skipping %s: %s.", bad, why)
                if skipped:
                    logger.warning("Resuming from %s, the last complete checkpoint.", path)
            return path
        skipped.append((path, reason))
    if log:
        for bad, why in skipped:
            logger.warning("Skipping %s: %s; no complete checkpoint is left, so training starts afresh.", bad, why)
    return None


class ResumeFromCompleteCheckpoint:
    """Trainer mixin: `train(resume_from_checkpoint=True)` resumes from the last complete checkpoint,
    not from a half-written newer one; an explicit incomplete path is refused with the reason."""

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        if resume_from_checkpoint is True:
            found = last_complete_checkpoint(self.args.output_dir)
            if found is None:
                raise ValueError(f"No complete checkpoint found in output directory ({self.args.output_dir}).")
            resume_from_checkpoint = found
        elif isinstance(resume_from_checkpoint, str) and os.path.isdir(resume_from_checkpoint):
            reason = incomplete_reason(resume_from_checkpoint)
            if reason is not None:
                raise ValueError(f"cannot resume from {resume_from_checkpoint}: {reason}; resume from an earlier "
                                 "checkpoint, or start afresh.")
        return super().train(resume_from_checkpoint, *args, **kwargs)
