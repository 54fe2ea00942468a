"""MaskSubTrainer: transformers.Trainer whose training step adds the MaskSub sub-branch.

One step = main branch as self.compute_loss computes it, backward of its half, then the
perturbed sub-branch trained toward the detached main prediction, backward of its half.
Trainer then clips once and steps once. Peak activation memory stays at one branch.
"""
import inspect
import logging
import os
import time
from contextlib import nullcontext

from accelerate.utils import DistributedType
from transformers import PreTrainedModel, Trainer

from .checkpoints import ResumeFromCompleteCheckpoint
from .config import validate
from .losses import RELAXED_LOSSES, resolve_loss_name
from .models import base_model_of, find_family
from .models.base import as_sub_batch
from .nonfinite import NonFiniteGuard
from .perturb import frozen_norm_stats

logger = logging.getLogger(__name__)


def _ignores_num_items_in_batch(model) -> bool:
    """A forward that takes **kwargs (so Trainer hands it num_items_in_batch and stops dividing by the
    accumulation steps) but computes its own mean loss without it (BERT in transformers 5.x)."""
    try:
        source = inspect.getsource(type(model).forward)
    except (OSError, TypeError):
        return False
    return "num_items_in_batch" not in source and "loss_function" not in source


class MaskSubTrainer(ResumeFromCompleteCheckpoint, NonFiniteGuard, Trainer):
    """Drop-in replacement for transformers.Trainer; reads masksub_* from MaskSubConfig (defaults: mask, 0.5).

    The main branch is `self.compute_loss`, so overrides and `compute_loss_func` train as they
    evaluate; in MaskSub steps it is called with num_items_in_batch=None and must return the batch
    mean. `masksub_type none` is Trainer, untouched.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.masksub_type = getattr(self.args, "masksub_type", "mask")
        self.masksub_ratio = getattr(self.args, "masksub_ratio", 0.5)
        self.masksub_loss = getattr(self.args, "masksub_loss", "auto")
        self.masksub_plain = getattr(self.args, "masksub_plain", False)
        validate(self.masksub_type, self.masksub_ratio, self.masksub_loss)
        if self.masksub_plain and self.masksub_type == "none":
            raise ValueError("--masksub_plain applies the masksub_type perturbation to the main branch; "
                             "choose --masksub_type mask, drop or path with it.")
        self.family = None
        base = base_model_of(self.accelerator.unwrap_model(self.model))
        if self.masksub_type == "none":
            self._warn_if_trainer_scales_wrongly(base)
        else:
            self.family = find_family(base)
            self.family.check(base, self.masksub_type)
            # Our losses are per-micro-batch means that we divide by the accumulation steps ourselves:
            # never hand the model num_items_in_batch (BERT ignores it, ViT divides by it).
            self.model_accepts_loss_kwargs = False
            self.loss_is_scaled_for_ga = False
        self._branch_sums = {}
        self._train_started = None

    def _warn_if_trainer_scales_wrongly(self, base):
        # Trainer hands num_items_in_batch over only when the batch has labels (CLIPModel's return_loss has none)
        if (self.args.gradient_accumulation_steps > 1 and self.model_accepts_loss_kwargs
                and "labels" in (self.label_names or [])
                and self.compute_loss_func is None and self.loss_is_scaled_for_ga is None
                and _ignores_num_items_in_batch(base)):
            logger.warning(
                "masksub_type none is transformers.Trainer exactly, including its gradient-accumulation quirk: "
                f"{type(base).__name__}.forward takes **kwargs, so Trainer passes num_items_in_batch and does not divide "
                "the loss by gradient_accumulation_steps, but the model ignores it and returns a per-batch mean. The "
                f"logged loss and the gradients are {self.args.gradient_accumulation_steps}x those of one large batch "
                "(upstream transformers behaviour). MaskSub types use per-micro-batch means; compare runs accordingly.")

    # ---- the sub-branch ----------------------------------------------------------------------
    def perturbed(self, model, inputs):
        """Context manager: the model perturbed as masksub_type says, yielding the matching inputs."""
        perturb = getattr(self.family, self.masksub_type)
        return perturb(base_model_of(self.accelerator.unwrap_model(model)), inputs, self.masksub_ratio)

    def relaxed_loss(self, model, sub_outputs, sub, inputs, target):
        """The sub-branch prediction against the detached main one, in fp32."""
        base = base_model_of(self.accelerator.unwrap_model(model))
        name = resolve_loss_name(base, self.masksub_loss, self.family.loss_name(base))
        sub_pred, main_pred = self.family.pair(self.family.prediction(sub_outputs), target, sub, inputs)
        return RELAXED_LOSSES[name](sub_pred, main_pred)

    def main_branch(self, model, inputs):
        """(loss, detached prediction) through self.compute_loss, so subclasses' overrides train too."""
        with self.compute_loss_context_manager():
            result = self.compute_loss(model, dict(inputs), return_outputs=True)
        if not (isinstance(result, tuple) and len(result) == 2):
            raise ValueError(f"{type(self).__name__}.compute_loss(..., return_outputs=True) must return (loss, outputs): "
                             "the sub-branch learns the main branch's prediction from those outputs.")
        loss, outputs = result
        return loss, self.family.prediction(outputs).detach()

    def train(self, *args, **kwargs):
        self._train_started = time.perf_counter()
        try:
            return super().train(*args, **kwargs)
        finally:
            self._train_started = None

    def one_combined_backward(self) -> bool:
        """DeepSpeed's backward may step the optimizer, and ZeRO rejects a second one: one combined
        backward there (1.4-1.5x activation memory); two everywhere else."""
        return self.accelerator.distributed_type == DistributedType.DEEPSPEED

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self.family is None:
            return super().training_step(model, inputs, num_items_in_batch)
        model.train()
        if hasattr(self.optimizer, "train") and callable(self.optimizer.train):
            self.optimizer.train()
        inputs = self._prepare_inputs(inputs)
        if self.masksub_plain:  # the analysis row: the perturbation on the main branch, through backward
            with self.perturbed(model, dict(inputs)) as masked:
                return super().training_step(model, dict(masked), num_items_in_batch)
        accumulation = getattr(self, "current_gradient_accumulation_steps", self.args.gradient_accumulation_steps)
        scale = 2 * accumulation  # each branch is half of the loss
        combined = self.one_combined_backward()
        # Main branch first, its graph freed before the sub-branch runs. Under DDP its gradients
        # wait (no_sync): the sub-branch backward all-reduces the sum once.
        with nullcontext() if combined else self.accelerator.no_sync(model):
            main_loss, target = self.main_branch(model, inputs)
            if not combined:
                self.accelerator.backward(main_loss / scale)
        # The perturbation (and the BatchNorm statistics it must not move) stays in force through the
        # sub-branch backward: gradient checkpointing recomputes the perturbed layers there.
        unwrapped = base_model_of(self.accelerator.unwrap_model(model))
        sub_inputs = {k: v for k, v in inputs.items() if k not in ("labels", "return_loss")}
        with frozen_norm_stats(unwrapped), self.perturbed(model, sub_inputs) as yielded:
            sub = as_sub_batch(yielded)
            with self.compute_loss_context_manager():
                sub_loss = self.relaxed_loss(model, model(**sub), sub, inputs, target)
            if combined:
                deepspeed = self.accelerator.distributed_type == DistributedType.DEEPSPEED
                self.accelerator.backward((main_loss + sub_loss) / scale, **({"scale_wrt_gas": False} if deepspeed else {}))
            else:
                self.accelerator.backward(sub_loss / scale)
        self._record(main_loss, sub_loss)
        return (main_loss.detach() + sub_loss.detach()) / scale

    # ---- checkpoints --------------------------------------------------------------------------
    def _load_pretrained_weights(self, checkpoint, model=None) -> bool:
        """Load a checkpoint's weights through from_pretrained, strictly.

        Trainer (5.x) reads checkpoint tensors under the model's internal names, so a model whose
        saved names are converted (ViT: encoder.layer -> layers) silently resumes from random
        weights. from_pretrained applies the conversion. Returns False where Trainer must load.
        """
        model = model if model is not None else self.model
        if (not isinstance(model, PreTrainedModel) or self.is_deepspeed_enabled or self.is_fsdp_enabled
                or not os.path.isfile(os.path.join(checkpoint, "config.json"))):
            return False
        loaded = type(model).from_pretrained(checkpoint, config=model.config)
        model.load_state_dict(loaded.state_dict(), strict=True)
        return True

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        if not self._load_pretrained_weights(resume_from_checkpoint, model):
            super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_best_model(self):
        if not self._load_pretrained_weights(self.state.best_model_checkpoint):
            super()._load_best_model()

    # ---- logging -------------------------------------------------------------------------------
    def _record(self, main_loss, sub_loss):
        if not self.check_branch_losses(main_loss, sub_loss):  # nonfinite.py: stop, or keep a skipped step out
            return
        for key, value in (("loss_main", main_loss), ("loss_sub", sub_loss)):
            total, count = self._branch_sums.get(key, (0.0, 0))
            self._branch_sums[key] = (total + value.detach().float(), count + 1)

    def log(self, logs, *args, **kwargs):
        """Add the window means of loss_main and loss_sub beside Trainer's training `loss`, and, while
        training, the seconds since it began (`elapsed_s`) so runs can be compared against wall-clock."""
        if self._train_started is not None:
            logs["elapsed_s"] = round(time.perf_counter() - self._train_started, 3)
        if "loss" in logs and self._branch_sums:
            for key, (total, count) in self._branch_sums.items():
                value = self.accelerator.gather((total / count).reshape(1)).mean().item()
                logs[key] = round(value, 4)
            self._branch_sums = {}
        super().log(logs, *args, **kwargs)
