"""What a training run does when a loss or the gradient norm stops being a finite number.

Plain Trainer carries on: one inf pixel or a learning rate of 1e6 turns every weight into NaN,
the run goes to its end, exits 0, and the NaN filter logs the loss as a plausible number.
`NonFiniteGuard` looks at every micro-batch's losses (both branches under MaskSub) and at the
gradient norm Trainer computes before each optimizer step, and then

- `stop` (the default with a sub-branch): raises `NonFiniteTrainingError` naming the step and the branch, before the
  optimizer step and before any checkpoint of that step, so the last checkpoint stays as it was;
- `skip`: drops that optimizer step (every gradient set to None, so neither the weights nor the
  optimizer's moments move; the batch and its learning-rate step are consumed), counts it in
  the logs (`nonfinite_skipped`) and stops after `masksub_nonfinite_max_skips` skips in a row;
- `off` (the default of `masksub_type none`, which is Trainer exactly): nothing is checked, Trainer
  trains on and its `logging_nan_inf_filter` decides what is logged.

A finite run is untouched: nothing is computed on the weights or gradients, so its numbers are
bit for bit those of Trainer. With fp16 loss scaling the gradient norm is left to the GradScaler
(it skips overflowing steps by design); the losses are still checked.
"""
import logging
import math
from typing import Optional

import torch

logger = logging.getLogger(__name__)

NONFINITE_MODES = ("stop", "skip", "off")


class NonFiniteTrainingError(RuntimeError):
    """Training met a non-finite loss or gradient norm (the message names the step and branch)."""


def validate_nonfinite(mode: Optional[str], max_skips: int) -> None:
    if mode is not None and mode not in NONFINITE_MODES:
        raise ValueError(f"--masksub_nonfinite {mode!r} is unknown; choose one of {', '.join(NONFINITE_MODES)}.")
    if not isinstance(max_skips, int) or isinstance(max_skips, bool) or max_skips < 1:
        raise ValueError(f"--masksub_nonfinite_max_skips must be a positive integer; got {max_skips!r}.")


def _value(x) -> float:
    return float(x.detach().float().item()) if isinstance(x, torch.Tensor) else float(x)


class NonFiniteGuard:
    """Trainer mixin (put it before Trainer in the bases). It hooks three places:

    - `training_step` (Trainer's, reached by the plain path): the returned loss is the main branch's;
    - `check_branch_losses(main, sub)`, called by the two-branch step where it records both losses;
      it returns False for a non-finite pair, which is then kept out of the logged window means;
    - `_get_grad_norm`, Trainer's last call before `on_pre_optimizer_step` and `optimizer.step()`:
      where the step is stopped or skipped;
    - `nonfinite_before_engine_step(model)`, called by the two-branch step under DeepSpeed just before
      `engine.step()` (the engine steps inside the backward, before `_get_grad_norm`): where it stops there.
    """

    def nonfinite_default(self) -> str:
        """The mode when the user named none (MaskSubTrainer: off for masksub_type none)."""
        return "stop"

    def _nonfinite_setup(self):
        if hasattr(self, "_nonfinite_mode"):
            return
        from .config import settings_of  # config imports this module's modes

        settings = settings_of(self.args)
        self._nonfinite_mode = settings.masksub_nonfinite or self.nonfinite_default()
        self._nonfinite_max_skips = settings.masksub_nonfinite_max_skips
        validate_nonfinite(self._nonfinite_mode, self._nonfinite_max_skips)
        self._nonfinite_found = None  # first bad loss of the current optimizer step: (branch, value)
        self._nonfinite_skipped = 0
        self._nonfinite_in_a_row = 0
        self._nonfinite_window = [0, 0]  # optimizer steps, skipped steps since the last log

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from .config import settings_of

        if settings_of(self.args).masksub_nonfinite == "skip" and getattr(self, "is_deepspeed_enabled", False):
            raise ValueError("--masksub_nonfinite skip cannot skip a DeepSpeed step (its engine steps itself); "
                             "use --masksub_nonfinite stop.")

    # ---- losses ------------------------------------------------------------------------------
    def check_branch_losses(self, main_loss, sub_loss=None) -> bool:
        """Note a non-finite loss of this step (the first one, with its branch); True when finite."""
        self._nonfinite_setup()
        for branch, loss in (("main", main_loss), ("sub", sub_loss)):
            if loss is None:
                continue
            value = _value(loss)
            if not math.isfinite(value):
                if self._nonfinite_found is None:
                    self._nonfinite_found = (branch, value)
                return False
        return True

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        self._nonfinite_setup()
        if self._nonfinite_mode != "off":
            self.check_branch_losses(loss)
        return loss

    # ---- the optimizer step ------------------------------------------------------------------
    def nonfinite_before_engine_step(self, model) -> None:
        """DeepSpeed's engine steps inside the last backward of an optimizer step, before Trainer's
        `_get_grad_norm`: the two-branch step calls this just before `engine.step()`, so a stop leaves the
        weights as they were. It decides from the losses; the gradient norm exists only after the step."""
        self._nonfinite_setup()
        if self._nonfinite_mode == "off":
            return
        self._nonfinite_step(model, None)
        self._nonfinite_decided_before_step = True

    def _get_grad_norm(self, model, grad_norm=None):
        grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        self._nonfinite_setup()
        if self._nonfinite_mode != "off":
            if getattr(self, "_nonfinite_decided_before_step", False):  # DeepSpeed: the engine has stepped
                self._nonfinite_decided_before_step = False
                self._nonfinite_norm_after_engine_step(grad_norm)
            else:  # Trainer's own backward (masksub_type none) under DeepSpeed: the engine stepped in it
                self._nonfinite_step(model, grad_norm, applied=getattr(self, "is_deepspeed_enabled", False))
        return grad_norm

    def _nonfinite_norm_after_engine_step(self, grad_norm) -> None:
        """Finite losses, non-finite gradient norm under DeepSpeed: the engine has applied the step (unless its
        own overflow check skipped it); stop rather than train on."""
        norm = None if grad_norm is None else _value(grad_norm)
        if norm is None or math.isfinite(norm):
            return
        raise NonFiniteTrainingError(
            f"step {self.state.global_step + 1}: the gradient norm is {norm} (both branch losses were finite); "
            f"DeepSpeed's engine had already applied this step when its norm was known, so the weights may be "
            f"non-finite{self._last_checkpoint_note()}. {self._nonfinite_advice()}")

    def _nonfinite_step(self, model, grad_norm, applied=False) -> None:
        self._nonfinite_setup()
        found, self._nonfinite_found = self._nonfinite_found, None
        norm = None if grad_norm is None else _value(grad_norm)
        scaled = getattr(self.accelerator, "scaler", None) is not None
        bad_norm = norm is not None and not math.isfinite(norm) and not scaled
        bad = found is not None or bad_norm
        if self.accelerator.num_processes > 1:  # every process must take the same decision
            flag = torch.tensor([float(bad)], device=self.args.device)
            bad = bool(self.accelerator.gather(flag).sum().item() > 0)
        self._nonfinite_window[0] += 1
        if not bad:
            self._nonfinite_in_a_row = 0
            return
        step = self.state.global_step + 1
        if found is not None:
            what = f"the {found[0]}-branch loss is {found[1]}"
        elif bad_norm:
            what = f"the gradient norm is {norm} (both branch losses were finite)"
        else:
            what = "another process met a non-finite loss"
        if self._nonfinite_mode == "stop":
            when = ("training stopped, but DeepSpeed's engine had already applied this step in Trainer's backward, "
                    "so the weights may be non-finite" if applied else
                    "training stopped before this step changed the weights")
            raise NonFiniteTrainingError(f"step {step}: {what}; {when}{self._last_checkpoint_note()}. "
                                         f"{self._nonfinite_advice()}")
        for param in model.parameters():  # no gradient: the optimizer leaves weights and moments alone
            param.grad = None
        self._nonfinite_skipped += 1
        self._nonfinite_in_a_row += 1
        self._nonfinite_window[1] += 1
        logger.warning("step %d: %s; skipped this optimizer step (%d skipped, %d in a row).", step, what,
                       self._nonfinite_skipped, self._nonfinite_in_a_row)
        if self._nonfinite_in_a_row >= self._nonfinite_max_skips:
            raise NonFiniteTrainingError(
                f"step {step}: {what}; {self._nonfinite_in_a_row} optimizer steps in a row were skipped "
                f"(--masksub_nonfinite_max_skips {self._nonfinite_max_skips}), so training stopped"
                f"{self._last_checkpoint_note()}. {self._nonfinite_advice()}")

    def _nonfinite_advice(self) -> str:
        return ("Check the inputs for inf/NaN values and lower --learning_rate"
                + (" (or clip with --max_grad_norm)" if not self.args.max_grad_norm else "") + ".")

    def _last_checkpoint_note(self) -> str:
        from .checkpoints import last_complete_checkpoint

        last = last_complete_checkpoint(self.args.output_dir, log=False)
        return f"; the last checkpoint, {last}, is untouched" if last else "; no checkpoint was written"

    # ---- logging -----------------------------------------------------------------------------
    def log(self, logs, *args, **kwargs):
        """In skip mode: add the count of skipped steps, and log a window made only of skipped steps as a NaN
        loss (Trainer's NaN filter would fill it with the window's earlier mean, 0.0 when there is none)."""
        if "loss" in logs and getattr(self, "_nonfinite_mode", None) == "skip":
            logs["nonfinite_skipped"] = self._nonfinite_skipped
            steps, skipped = self._nonfinite_window
            if steps and skipped == steps:
                logs["loss"] = float("nan")
            self._nonfinite_window = [0, 0]
        super().log(logs, *args, **kwargs)

    @property
    def nonfinite_skipped(self) -> int:
        """How many optimizer steps were skipped for non-finite values (skip mode)."""
        return getattr(self, "_nonfinite_skipped", 0)
