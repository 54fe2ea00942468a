"""Train a tiny BERT under DDP and under FSDP2 in ONE two-process job (run by test_fsdp.py).

FSDP2 through the route that shards on CPU: transformers' own `from_pretrained(..., distributed_config=
DistributedConfig(fsdp_size=2))` (accelerate 1.15 takes its FSDP branch only on GPU-like devices and runs
DDP on CPU). Trainer then defers the reduce-scatter of non-final accumulation micro-batches itself.

usage: torchrun --nproc_per_node 2 fsdp_train.py TOKENIZER_DIR OUT.pt WORKDIR JOB[,JOB...]
JOB: BACKEND:TYPE:ACCUMULATION, BACKEND ddp, fsdp2 or fsdp-args (TrainingArguments(fsdp="full_shard"), which
accelerate runs as DDP on CPU: MaskSubTrainer must say so, once). Saves, per job, the full final weights, whether the
parameters were DTensors holding a shard, and the gradient reductions (FSDP2 reduce-scatters) per step.
"""
import logging
import os
import sys

import torch
import torch.distributed as dist
from transformers import AutoTokenizer, BertForSequenceClassification, DataCollatorWithPadding

sys.path[:0] = [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]

from masksub_hf import MaskSubTrainer  # noqa: E402
from tasks.assets import movie_reviews  # noqa: E402
from tests.ddp_train import FixedScores  # noqa: E402
from tests.deepspeed_train import SameRandomness  # noqa: E402
from tests.helpers import args, text_dataset, tiny_bert  # noqa: E402

BATCH, STEPS = 4, 3
REDUCE_SCATTERS = [0]


def count_reduce_scatters():
    """FSDP2 reduce-scatters each gradient group through dist.reduce_scatter_single: count the calls."""
    original = dist.reduce_scatter_single

    def counted(*a, **kw):
        REDUCE_SCATTERS[0] += 1
        return original(*a, **kw)

    dist.reduce_scatter_single = counted


def load(model_dir, backend):
    if backend == "fsdp2":
        from transformers.distributed import DistributedConfig

        return BertForSequenceClassification.from_pretrained(model_dir, distributed_config=DistributedConfig(fsdp_size=2))
    return BertForSequenceClassification.from_pretrained(model_dir)


def full_weights(model):
    from torch.distributed.tensor import DTensor

    return {k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().clone() for k, v in model.state_dict().items()}


def sharding(model):
    """How many parameters are DTensors, and how many elements this rank holds of how many."""
    from torch.distributed.tensor import DTensor

    params = list(model.parameters())
    dtensors = [p for p in params if isinstance(p, DTensor)]
    return {"params": len(params), "dtensors": len(dtensors),
            "local": sum(p.to_local().numel() for p in dtensors), "total": sum(p.numel() for p in params)}


class Warnings(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def run_job(job, tok, data, model_dir, workdir):
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    backend, masksub_type, accumulation = job.split(":")
    model = load(model_dir, backend)
    warnings = Warnings()
    logging.getLogger("masksub_hf").addHandler(warnings)
    extra = {"fsdp": "full_shard"} if backend == "fsdp-args" else {}
    trainer = MaskSubTrainer(
        model=model, train_dataset=data, data_collator=DataCollatorWithPadding(tok), callbacks=[SameRandomness()],
        args=args(os.path.join(workdir, job.replace(":", "-")), masksub_type=masksub_type,
                  per_device_train_batch_size=BATCH, max_steps=STEPS, gradient_accumulation_steps=int(accumulation),
                  optim="sgd", learning_rate=0.5, max_grad_norm=0.0, lr_scheduler_type="linear",
                  train_sampling_strategy="sequential", ddp_backend="gloo", **extra))
    logging.getLogger("masksub_hf").removeHandler(warnings)
    REDUCE_SCATTERS[0] = 0
    trainer.train()
    return {"weights": full_weights(trainer.model), "sharding": sharding(trainer.model),
            "wrapped": type(trainer.model_wrapped).__name__, "steps": trainer.state.global_step,
            "reduce_scatters": REDUCE_SCATTERS[0],
            "fsdp_warnings": [m for m in warnings.messages if "--fsdp" in m], "logs": [h for h in trainer.state.log_history if "loss" in h]}


def main(tokenizer_dir, out, workdir, jobs):
    import masksub_hf.perturb.tokens as tokens

    tokens.random_scores = FixedScores()
    count_reduce_scatters()
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    data = text_dataset(tok, movie_reviews(), n=2 * BATCH * 2 * STEPS)
    model_dir = os.path.join(workdir, "model")
    if int(os.environ.get("RANK", 0)) == 0:  # one set of starting weights for every run
        tiny_bert(vocab_size=len(tok)).save_pretrained(model_dir)
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    dist.barrier()
    results = {job: run_job(job, tok, data, model_dir, workdir) for job in jobs.split(",")}
    if int(os.environ.get("RANK", 0)) == 0:
        torch.save(results, out)


if __name__ == "__main__":
    main(*sys.argv[1:])
