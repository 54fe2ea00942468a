"""Train a tiny BERT under DDP and DeepSpeed ZeRO in ONE two-process job, several configurations in a loop
(run by test_deepspeed.py; one launch instead of one per configuration keeps the suite short).

usage: torchrun --nproc_per_node 2 deepspeed_train.py TOKENIZER_DIR OUT.pt WORKDIR JOB[,JOB...]
JOB: BACKEND:TYPE:ACCUMULATION (BACKEND ddp, zero1, zero2, zero3), or resume (ZeRO-2 mask: 4 steps straight
and 2 + 2 from a checkpoint), or nonfinite (ZeRO-2 mask, a NaN main loss in step 2).
Saves, per job, the final weights (gathered under ZeRO-3), the step counts of Trainer, the engine and the
scheduler, and the logged losses. DS_ACCELERATOR=cpu must be set (the launcher does).
"""
import os
import sys

import torch
from transformers import AutoTokenizer, DataCollatorWithPadding, TrainerCallback

sys.path[:0] = [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]

from masksub_hf import MaskSubTrainer  # noqa: E402
from masksub_hf.nonfinite import NonFiniteTrainingError  # noqa: E402
from tasks.assets import movie_reviews  # noqa: E402
from tests.ddp_train import FixedScores  # noqa: E402
from tests.helpers import args, text_dataset, tiny_bert  # noqa: E402

BATCH, STEPS = 4, 3


def zero_config(stage):
    """A ZeRO config as users write one for Trainer: "auto" fields, Trainer's own optimizer and scheduler."""
    return {"zero_optimization": {"stage": stage, "stage3_gather_16bit_weights_on_model_save": True},
            "train_micro_batch_size_per_gpu": "auto", "train_batch_size": "auto",
            "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
            "zero_allow_untested_optimizer": True, "steps_per_print": 10 ** 9, "wall_clock_breakdown": False}


class SameRandomness(TrainerCallback):
    """Dropout draws (drop) from the same generator state whatever the engine consumed while it was set up."""

    def on_train_begin(self, args, state, control, **kwargs):
        torch.manual_seed(1234 + int(os.environ.get("RANK", 0)))


class NaNInStep(MaskSubTrainer):
    """The main branch's loss turns NaN in one optimizer step (0-based global_step), for the guard."""

    nan_at = 1

    def compute_loss(self, model, inputs, *a, **kw):
        result = super().compute_loss(model, inputs, *a, **kw)
        if self.state.global_step == self.nan_at:
            loss, outputs = result if isinstance(result, tuple) else (result, None)
            loss = loss * float("nan")
            return (loss, outputs) if isinstance(result, tuple) else loss
        return result


def reset_accelerate():
    """One process, many trainers with different engines: forget the previous one's accelerate/DeepSpeed state
    (the process group stays)."""
    from accelerate.state import AcceleratorState, GradientState
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    unset_hf_deepspeed_config()


def weights(trainer):
    """Full weights on every rank (ZeRO-3 partitions them: gather first)."""
    model = trainer.model_wrapped
    engine = trainer._deepspeed_engine()
    module = engine.module if engine is not None else trainer.accelerator.unwrap_model(model)
    if engine is not None and engine.zero_optimization_stage() == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(module.parameters())):
            return {k: v.detach().clone() for k, v in module.state_dict().items()}
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def steps(trainer):
    engine = trainer._deepspeed_engine()
    scheduler = trainer.lr_scheduler
    scheduler = getattr(scheduler, "scheduler", scheduler)
    if engine is not None and engine.lr_scheduler is not None:
        scheduler = engine.lr_scheduler
    return {"trainer": trainer.state.global_step, "engine": None if engine is None else engine.global_steps,
            "engine_skipped": None if engine is None else engine.skipped_steps,
            "scheduler": scheduler.last_epoch, "backend": type(engine or trainer.model_wrapped).__name__}


def make(tok, data, output_dir, backend, masksub_type, accumulation, cls=MaskSubTrainer, **kw):
    reset_accelerate()
    extra = {} if backend == "ddp" else {"deepspeed": zero_config(int(backend[-1]))}
    settings = dict(masksub_type=masksub_type, per_device_train_batch_size=BATCH, max_steps=STEPS,
                    gradient_accumulation_steps=accumulation, optim="sgd", learning_rate=0.5, max_grad_norm=0.0,
                    lr_scheduler_type="linear", train_sampling_strategy="sequential", ddp_backend="gloo")
    settings.update(kw)
    trainer = cls(model=tiny_bert(vocab_size=len(tok)), train_dataset=data, data_collator=DataCollatorWithPadding(tok),
                  callbacks=[SameRandomness()], args=args(output_dir, **extra, **settings))
    return trainer


def run_job(job, tok, data, workdir):
    if job == "resume":  # ZeRO-2 mask: 4 steps straight, then 2 + 2 from the step-2 checkpoint
        out = {}
        straight = make(tok, data, os.path.join(workdir, "straight"), "zero2", "mask", 1, max_steps=4)
        straight.train()
        out["straight"] = {"weights": weights(straight), "steps": steps(straight)}
        half = os.path.join(workdir, "halves")
        first = make(tok, data, half, "zero2", "mask", 1, max_steps=4, save_strategy="steps", save_steps=2)
        first.args.max_steps = 4
        first.train()  # writes checkpoint-2 and checkpoint-4; resume from checkpoint-2
        second = make(tok, data, half, "zero2", "mask", 1, max_steps=4)
        second.train(resume_from_checkpoint=os.path.join(half, "checkpoint-2"))
        out["resumed"] = {"weights": weights(second), "steps": steps(second)}
        return out
    if job == "nonfinite":  # the guard must stop before the engine applies step 2
        trainer = make(tok, data, os.path.join(workdir, "nan"), "zero2", "mask", 2, cls=NaNInStep)
        before = {}

        class Snapshot(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                before["weights"] = weights(trainer)

        trainer.add_callback(Snapshot())
        try:
            trainer.train()
            error = None
        except NonFiniteTrainingError as e:
            error = str(e)
        return {"error": error, "before": before["weights"], "weights": weights(trainer), "steps": steps(trainer)}
    backend, masksub_type, accumulation = job.split(":")
    trainer = make(tok, data, os.path.join(workdir, job.replace(":", "-")), backend, masksub_type, int(accumulation))
    trainer.train()
    return {"weights": weights(trainer), "steps": steps(trainer),
            "logs": [h for h in trainer.state.log_history if "loss" in h], "world": trainer.args.world_size}


def main(tokenizer_dir, out, workdir, jobs):
    import masksub_hf.perturb.tokens as tokens

    tokens.random_scores = FixedScores()
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    data = text_dataset(tok, movie_reviews(), n=2 * BATCH * 2 * 4)  # 2 processes x batch x accumulation 2 x 4 steps
    results = {job: run_job(job, tok, data, workdir) for job in jobs.split(",")}
    if int(os.environ.get("RANK", 0)) == 0:
        torch.save(results, out)


if __name__ == "__main__":
    main(*sys.argv[1:])
