"""MaskSubTrainer: transformers.Trainer whose training step adds the MaskSub sub-branch.

One step = main branch exactly as Trainer computes it, backward of its half, then the
perturbed sub-branch trained toward the detached main prediction, backward of its half.
Trainer then clips once and steps once. Peak activation memory stays at one branch.
"""
import os
import time

from accelerate.utils import DistributedType
from transformers import PreTrainedModel, Trainer

from .checkpoints import ResumeFromCompleteCheckpoint
from .config import validate
from .losses import RELAXED_LOSSES, resolve_loss_name
from .models import find_family
from .perturb import frozen_norm_stats
from .nonfinite import NonFiniteGuard


def _logits(outputs):
    if isinstance(outputs, dict) and "logits" in outputs:
        return outputs["logits"]
    raise ValueError(
        "MaskSubTrainer needs a model that returns a ModelOutput/dict with 'logits' (got "
        f"{type(outputs).__name__}); return_dict=False models are not supported."
    )


class MaskSubTrainer(ResumeFromCompleteCheckpoint, NonFiniteGuard, Trainer):
    """Drop-in replacement for transformers.Trainer; reads masksub_* from MaskSubConfig (defaults: mask, 0.5).

    A `compute_loss_func` is honoured for the main branch; in MaskSub steps it is called with
    num_items_in_batch=None and must then return the batch mean.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Never hand num_items_in_batch to the model (BERT ignores it, ViT divides by it): the model's
        # loss is then a per-batch mean, and Trainer (masksub_type none) or we divide it by the accumulation steps.
        self.model_accepts_loss_kwargs = False
        self.masksub_type = getattr(self.args, "masksub_type", "mask")
        self.masksub_ratio = getattr(self.args, "masksub_ratio", 0.5)
        self.masksub_loss = getattr(self.args, "masksub_loss", "auto")
        self.masksub_plain = getattr(self.args, "masksub_plain", False)
        validate(self.masksub_type, self.masksub_ratio, self.masksub_loss)
        if self.masksub_plain and self.masksub_type == "none":
            raise ValueError("--masksub_plain applies the masksub_type perturbation to the main branch; "
                             "choose --masksub_type mask, drop or path with it.")
        self.family = None
        if self.masksub_type != "none":
            unwrapped = self.accelerator.unwrap_model(self.model)
            self.family = find_family(unwrapped)
            self.family.check(unwrapped, self.masksub_type)
        self._branch_sums = {}
        self._train_started = None

    # ---- the sub-branch ----------------------------------------------------------------------
    def perturbed(self, model, inputs):
        """Context manager: the model perturbed as masksub_type says, yielding the matching inputs."""
        perturb = getattr(self.family, self.masksub_type)
        return perturb(self.accelerator.unwrap_model(model), inputs, self.masksub_ratio)

    def sub_branch_loss(self, model, inputs, main_logits):
        """Forward the perturbed batch through the same (wrapped) model; relaxed loss to the detached target.

        BatchNorm running statistics are left as the main branch set them: inference uses them."""
        unwrapped = self.accelerator.unwrap_model(model)
        with frozen_norm_stats(unwrapped), \
                self.perturbed(model, {k: v for k, v in inputs.items() if k != "labels"}) as sub_inputs:
            sub_logits = _logits(model(**sub_inputs))
        loss_name = resolve_loss_name(unwrapped, self.masksub_loss)
        return RELAXED_LOSSES[loss_name](sub_logits, main_logits.detach())

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Training: the full MaskSub loss (L_main + L_sub) / 2. Evaluation: exactly Trainer's."""
        if self.family is None or not model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if self.masksub_plain:
            with self.perturbed(model, dict(inputs)) as masked_inputs:
                return super().compute_loss(model, masked_inputs, return_outputs, num_items_in_batch)
        main_loss, outputs = super().compute_loss(model, dict(inputs), return_outputs=True)
        sub_loss = self.sub_branch_loss(model, inputs, _logits(outputs))
        self._record(main_loss, sub_loss)
        loss = (main_loss + sub_loss) / 2
        return (loss, outputs) if return_outputs else loss

    def train(self, *args, **kwargs):
        self._train_started = time.perf_counter()
        try:
            return super().train(*args, **kwargs)
        finally:
            self._train_started = None

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self.family is None or self.masksub_plain:
            return super().training_step(model, inputs, num_items_in_batch)
        model.train()
        if hasattr(self.optimizer, "train") and callable(self.optimizer.train):
            self.optimizer.train()
        inputs = self._prepare_inputs(inputs)
        accumulation = getattr(self, "current_gradient_accumulation_steps", self.args.gradient_accumulation_steps)
        if self.accelerator.distributed_type == DistributedType.DEEPSPEED:
            # each DeepSpeed backward may step and ZeRO rejects a second one: one combined backward
            with self.compute_loss_context_manager():
                loss = self.compute_loss(model, inputs) / accumulation
            self.accelerator.backward(loss, scale_wrt_gas=False)
            return loss.detach()
        scale = 2 * accumulation  # each branch is half of the loss
        # Main branch first, its graph freed before the sub-branch runs. Under DDP its gradients
        # wait (no_sync): the sub-branch backward all-reduces the sum once.
        with self.accelerator.no_sync(model):
            with self.compute_loss_context_manager():
                main_loss, outputs = super().compute_loss(model, dict(inputs), return_outputs=True)
            target = _logits(outputs).detach()
            del outputs
            self.accelerator.backward(main_loss / scale)
        with self.compute_loss_context_manager():
            sub_loss = self.sub_branch_loss(model, inputs, target)
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
