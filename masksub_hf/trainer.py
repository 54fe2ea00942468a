"""MaskSubTrainer: transformers.Trainer whose training step adds the MaskSub sub-branch.

One step = main branch as self.compute_loss computes it, backward of its half, then the
perturbed sub-branch trained toward the detached main prediction, backward of its half.
Trainer then clips once and steps once. Peak activation memory stays at one branch.
"""
import inspect
import logging
import os
from contextlib import contextmanager, nullcontext

from accelerate.utils import DistributedType
from transformers import Trainer

from . import recommend
from .checkpoints import ResumeFromCompleteCheckpoint
from .config import DEFAULT_RATIO, settings_of, validate
from .losses import RELAXED_LOSSES, resolve_loss_name
from .models import base_model_of, find_family
from .models.base import as_sub_batch
from .main_prediction import main_prediction, model_calls
from .nonfinite import NonFiniteGuard
from .perturb import audit, frozen_norm_stats
from .sub_types import listed
from .wallclock import WallClock

logger = logging.getLogger(__name__)
_fsdp_as_ddp_warned = False  # _warn_if_fsdp_runs_as_ddp: once per process


def _ignores_num_items_in_batch(model) -> bool:
    """A forward that takes **kwargs (so Trainer hands it num_items_in_batch and stops dividing by the
    accumulation steps) but computes its own mean loss without it (BERT in transformers 5.x)."""
    try:
        source = inspect.getsource(type(model).forward)
    except (OSError, TypeError):
        return False
    return "num_items_in_batch" not in source and "loss_function" not in source


class MaskSubMixin(ResumeFromCompleteCheckpoint, NonFiniteGuard):
    """MaskSub for any Trainer subclass: `class MySFT(MaskSubMixin, SFTTrainer)`, with an argument dataclass that
    combines both (`class Args(MaskSubConfig, SFTConfig)`). Reads masksub_* from MaskSubConfig (default: auto, the
    measured best for the model's kind; plain TrainingArguments: mask at 0.5).

    The main branch is `self.compute_loss`, so overrides and `compute_loss_func` train as they
    evaluate; in MaskSub steps it must return the micro-batch's mean (a `compute_loss_func` is handed
    that micro-batch's own num_items_in_batch, so `sum / num_items_in_batch` is that mean). `masksub_type none` is Trainer, untouched.
    """

    def __init_subclass__(cls, **kwargs):
        """Trainer before MaskSubMixin in a class's bases would leave MaskSub's steps unused: silently Trainer."""
        super().__init_subclass__(**kwargs)
        mro = cls.__mro__
        if Trainer in mro and mro.index(Trainer) < mro.index(MaskSubMixin):
            trainer = next(b.__name__ for b in cls.__bases__ if issubclass(b, Trainer))
            raise TypeError(f"class {cls.__name__}: MaskSubMixin must come before {trainer} in its bases, or "
                            f"Trainer's training step runs instead of MaskSub's: class {cls.__name__}(MaskSubMixin, "
                            f"{trainer}).")

    def __init__(self, *args, **kwargs):
        if not isinstance(self, Trainer):
            raise TypeError(f"{type(self).__name__}: MaskSubMixin adds MaskSub to a transformers.Trainer subclass; "
                            "combine it with one: class T(MaskSubMixin, Trainer).")
        super().__init__(*args, **kwargs)
        settings = settings_of(self.args)
        self.masksub_type, self.masksub_ratio = settings.masksub_type, settings.masksub_ratio
        if self.masksub_ratio is None and self.masksub_type != "auto":  # args changed after their __post_init__
            self.masksub_ratio = DEFAULT_RATIO
        self.masksub_loss, self.masksub_plain = settings.masksub_loss, settings.masksub_plain
        validate(self.masksub_type, self.masksub_ratio, self.masksub_loss)
        self.family = None
        base = base_model_of(self.accelerator.unwrap_model(self.model))
        self.masksub_choice = None
        if self.masksub_type == "auto":
            self._choose_automatically(base)
        if self.masksub_plain and self.masksub_type == "none":
            raise ValueError("--masksub_plain applies the masksub_type perturbation to the main branch; "
                             f"choose --masksub_type {listed()} with it.")
        self._check_processes()
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
        self.add_callback(WallClock())  # seconds per logged step, beside the logs (wallclock.py)

    def run_identity(self):
        """The model's identity (checkpoints.py) and the sub-branch setting: resuming with another is refused."""
        return {**super().run_identity(), "masksub": self.masksub_setting()}

    def nonfinite_default(self) -> str:
        return "off" if self.masksub_type == "none" else "stop"  # none is Trainer: no guard unless asked

    def masksub_setting(self) -> str:
        """What this trainer runs, as flags (auto resolved): for logs and result files."""
        if self.masksub_type == "none":
            return "--masksub_type none"
        loss = "" if self.masksub_loss == "auto" else f" --masksub_loss {self.masksub_loss}"
        return f"--masksub_type {self.masksub_type} --masksub_ratio {self.masksub_ratio:g}{loss}"

    def _choose_automatically(self, base):
        """Resolve --masksub_type auto from the measured table (recommend.py); an explicit ratio or loss stays."""
        where, choice, passed = recommend.choose(find_family(base), base, self.masksub_loss)
        logger.warning(recommend.explain(where, choice, passed, self.masksub_ratio))
        self.masksub_choice = choice
        self.masksub_type = choice.masksub_type
        if self.masksub_ratio is None:
            self.masksub_ratio = choice.ratio
        if self.masksub_loss == "auto":
            self.masksub_loss = choice.loss

    def _check_processes(self):
        """Launched as several processes (torchrun, accelerate launch) while accelerate set up one: on a machine
        without a GPU that is a missing use_cpu, and each process would train alone on all the data."""
        self._warn_if_fsdp_runs_as_ddp()
        launched = int(os.environ.get("WORLD_SIZE", "1"))
        if launched <= 1 or self.accelerator.num_processes > 1:
            return
        message = (f"this process is one of {launched} launched (WORLD_SIZE), but accelerate set up a single process, "
                   "so each would train alone on all the data; on a machine without a GPU pass --use_cpu "
                   "(TrainingArguments(use_cpu=True)) so that they train together.")
        if self.masksub_type == "none":
            logger.warning(message)  # Trainer does this too; none stays Trainer
        else:
            raise ValueError(message)

    def _warn_if_fsdp_runs_as_ddp(self):
        """accelerate 1.15 takes its FSDP branch only on GPU-like devices: on CPU `--fsdp` silently trains with
        DDP (full weights, gradients and optimizer states in every process). Say so, once per process."""
        global _fsdp_as_ddp_warned
        if (_fsdp_as_ddp_warned or not self.args.fsdp or self.is_fsdp_enabled or self.accelerator.num_processes <= 1
                or getattr(self, "is_distributed_loading_by_transformers", False)):
            return
        _fsdp_as_ddp_warned = True
        logger.warning(
            "--fsdp is set, but accelerate runs FSDP "
            f"only on GPU-like devices: here ({self.accelerator.distributed_type}) it trains with DDP instead, every "
            "process holding the full weights, gradients and optimizer states (the same updates, not the memory). To "
            "shard on CPU, load the model with from_pretrained(..., distributed_config=DistributedConfig(fsdp_size=N)) "
            "(transformers shards it with FSDP2), or use DeepSpeed ZeRO (--deepspeed).")

    def _warn_if_trainer_scales_wrongly(self, base):
        # Trainer hands num_items_in_batch over only when the batch has labels (CLIPModel's return_loss has none)
        if not (self.model_accepts_loss_kwargs and "labels" in (self.label_names or [])
                and self.compute_loss_func is None and self.loss_is_scaled_for_ga is None
                and _ignores_num_items_in_batch(base)):
            return
        factors = []
        if self.args.gradient_accumulation_steps > 1:  # the loss is not divided by the accumulation steps
            factors.append(f"{self.args.gradient_accumulation_steps} (gradient_accumulation_steps)")
        if self.args.average_tokens_across_devices and self.accelerator.num_processes > 1:  # it is multiplied
            factors.append(f"{self.accelerator.num_processes} (processes, average_tokens_across_devices)")
        if factors:
            logger.warning(
                "masksub_type none is transformers.Trainer exactly, including its num_items_in_batch quirk: "
                f"{type(base).__name__}.forward takes **kwargs, so Trainer passes num_items_in_batch and leaves the "
                "scaling to the model, but the model ignores it and returns a per-batch mean. The logged loss and the "
                f"gradients are {' x '.join(factors)} times those of one large batch (upstream transformers "
                "behaviour). MaskSub types use per-micro-batch means; compare runs accordingly.")

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
        """(loss, detached prediction): the loss from self.compute_loss, so subclasses' overrides train too; the
        prediction from the forward that loss ran (main_prediction.py), never from a second one."""
        # A compute_loss_func written as sum / num_items_in_batch gets this micro-batch's count (Trainer's own
        # counting), so it returns the per-micro-batch mean that the two-branch step scales.
        count = {} if self.compute_loss_func is None else \
            {"num_items_in_batch": self._get_num_items_in_batch([inputs], self.args.device)}
        unwrapped = self.accelerator.unwrap_model(model)
        with model_calls(unwrapped) as captured, self.compute_loss_context_manager():
            loss = self.compute_loss(model, dict(inputs), **count)
        if isinstance(loss, tuple):  # an override that returns (loss, outputs) whatever it is asked
            loss = loss[0]
        return loss, main_prediction(captured, self.family, unwrapped, inputs, type(self).__name__)

    def train(self, *args, **kwargs):
        self._branch_sums = {}  # a logging window left open by an earlier train() call is not this run's
        return super().train(*args, **kwargs)

    def _deepspeed_engine(self):
        """The DeepSpeed engine when one trains the model, else None."""
        if self.accelerator.distributed_type != DistributedType.DEEPSPEED:
            return None
        wrapped = getattr(self.accelerator, "deepspeed_engine_wrapped", None)
        return wrapped.engine if wrapped is not None else self.model_wrapped

    def one_combined_backward(self) -> bool:
        """Whether the two halves must share one backward (both branches' activations at once: 1.4x memory for
        mask, 2x for drop). Only a DeepSpeed engine that cannot keep its accumulation boundary shut between two
        backwards needs it (accelerate's backward steps the optimizer at every synchronised backward); said once."""
        engine = self._deepspeed_engine()
        if engine is None or hasattr(engine, "set_gradient_accumulation_boundary"):
            return False
        if not getattr(self, "_combined_backward_said", False):
            self._combined_backward_said = True
            logger.warning("masksub: one combined backward per step (both branches' activations held at once) under "
                           f"{type(engine).__name__}: it has no set_gradient_accumulation_boundary to keep the "
                           "optimizer from stepping after the main branch's backward.")
        return True

    @contextmanager
    def _branch_no_sync(self, model):
        """Gradient reduction off for the main half (the sub half's backward reduces the sum once), and afterwards
        back to what it was, not simply on: inside Trainer's own no_sync (a non-final accumulation micro-batch) the
        sub half must not reduce either. accelerate 1.15's FSDP2 no_sync turns sync on at exit, so FSDP2 modules
        are saved and restored here."""
        from torch.distributed.fsdp import FSDPModule

        if not isinstance(model, FSDPModule):
            with self.accelerator.no_sync(model):
                yield
            return
        groups = [group for module in model.modules() if isinstance(module, FSDPModule)
                  for group in module._get_fsdp_state()._fsdp_param_groups]
        saved = [(group.reduce_grads, group.all_reduce_grads) for group in groups]
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            for group, (reduce_grads, all_reduce_grads) in zip(groups, saved):
                group.reduce_grads, group.all_reduce_grads = reduce_grads, all_reduce_grads

    def _deepspeed_backward(self, model, engine, loss, boundary):
        """accelerate's DeepSpeed backward (DeepSpeedEngineWrapper.backward) with the boundary ours to set: the
        main half's backward with it shut (the engine accumulates and does not step), the sub half's as Trainer
        set it, so the engine steps once per optimizer step. The loss is already divided by the accumulation
        steps (scale_wrt_gas=False, as Trainer). The non-finite guard decides before the engine steps."""
        managed = getattr(engine, "managed_gradient_accumulation", lambda: True)()  # else step() is the boundary
        if managed and hasattr(engine, "set_gradient_accumulation_boundary"):  # else only combined (boundary=sync)
            engine.set_gradient_accumulation_boundary(boundary)
        engine.backward(loss, scale_wrt_gas=False)
        if boundary:
            self.nonfinite_before_engine_step(model)
            engine.step()

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
        engine = self._deepspeed_engine()
        combined = self.one_combined_backward()
        sync = self.accelerator.sync_gradients  # Trainer's: the last micro-batch of an optimizer step
        # Main branch first, its graph freed before the sub-branch runs. Under DDP/FSDP its gradients
        # wait (no_sync), under DeepSpeed the engine's accumulation boundary stays shut: the sub-branch
        # backward reduces the sum once and (DeepSpeed) steps.
        with nullcontext() if combined or engine is not None else self._branch_no_sync(model):
            main_loss, target = self.main_branch(model, inputs)
            if engine is not None and not combined:
                self._deepspeed_backward(model, engine, main_loss / scale, boundary=False)
            elif not combined:
                self.accelerator.backward(main_loss / scale)
        # The perturbation (and the BatchNorm statistics it must not move) stays in force through the
        # sub-branch backward: gradient checkpointing recomputes the perturbed layers there.
        # Every step proves the perturbation reached the model (perturb/audit.py): a plan is not trusted.
        unwrapped = base_model_of(self.accelerator.unwrap_model(model))
        sub_inputs = self.family.sub_inputs(unwrapped, inputs)
        with audit.recording() as seen, frozen_norm_stats(unwrapped), self.perturbed(model, sub_inputs) as yielded:
            sub = as_sub_batch(yielded)
            with self.compute_loss_context_manager():
                sub_outputs = model(**sub)
                audit.verify(seen, self.masksub_type, self.masksub_ratio, unwrapped, self.family)
                sub_loss = self.relaxed_loss(model, sub_outputs, sub, inputs, target)
            self._record(main_loss, sub_loss)  # before a DeepSpeed engine steps: the non-finite guard reads it
            sub_half = (main_loss + sub_loss) / scale if combined else sub_loss / scale
            if engine is not None:
                self._deepspeed_backward(model, engine, sub_half, boundary=sync)
            else:
                self.accelerator.backward(sub_half)
        return (main_loss.detach() + sub_loss.detach()) / scale

    # ---- logging -------------------------------------------------------------------------------
    def _record(self, main_loss, sub_loss):
        if not self.check_branch_losses(main_loss, sub_loss):  # nonfinite.py: stop, or keep a skipped step out
            return
        for key, value in (("loss_main", main_loss), ("loss_sub", sub_loss)):
            total, count = self._branch_sums.get(key, (0.0, 0))
            self._branch_sums[key] = (total + value.detach().float(), count + 1)

    def log(self, logs, *args, **kwargs):
        """Add the window means of loss_main and loss_sub beside Trainer's training `loss` (none adds nothing)."""
        if "loss" in logs and self._branch_sums:
            for key, (total, count) in self._branch_sums.items():
                value = self.accelerator.gather((total / count).reshape(1)).mean().item()
                logs[key] = round(value, 4)
            self._branch_sums = {}
        super().log(logs, *args, **kwargs)


class MaskSubTrainer(MaskSubMixin, Trainer):
    """Drop-in replacement for transformers.Trainer (MaskSubMixin on Trainer itself)."""
