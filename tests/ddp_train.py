"""Train a tiny BERT with MaskSub for a few SGD steps and save the weights (run by test_ddp.py).

usage: [torchrun --nproc_per_node N] ddp_train.py TOKENIZER_DIR OUT.pt PER_DEVICE_BATCH TYPE[,TYPE...]
Saves, per type, the final weights, the logged branch losses and how many all-reduces DDP ran.
"""
import os
import sys

import torch
from transformers import AutoTokenizer, DataCollatorWithPadding, TrainerCallback

sys.path[:0] = [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]

from masksub_hf import MaskSubTrainer  # noqa: E402
from tasks.assets import movie_reviews  # noqa: E402
from tests.helpers import args, text_dataset, tiny_bert  # noqa: E402


class FixedScores:
    """Masks that depend on the position only, so every process split sees the same masks."""

    def __init__(self):
        self.table = torch.rand(4096, generator=torch.Generator().manual_seed(1))

    def __call__(self, shape, device):
        return self.table[: shape[1]].expand(shape).to(device)


class CountAllReduces(TrainerCallback):
    """Counts DDP's gradient all-reduces (one per bucket per synchronised backward)."""

    def __init__(self):
        self.trainer, self.calls = None, 0

    def on_train_begin(self, args, state, control, **kwargs):
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

        ddp = self.trainer.model_wrapped
        if isinstance(ddp, torch.nn.parallel.DistributedDataParallel):
            def hook(process_group, bucket):
                self.calls += 1
                return allreduce_hook(process_group, bucket)

            ddp.register_comm_hook(None, hook)


def main(tokenizer_dir, out, batch, masksub_types):
    import masksub_hf.perturb.tokens as tokens

    tokens.random_scores = FixedScores()
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    data = text_dataset(tok, movie_reviews(), n=32)
    results = {}
    for masksub_type in masksub_types.split(","):
        results[masksub_type] = train(tok, data, os.path.dirname(out), int(batch), masksub_type)
    if int(os.environ.get("RANK", 0)) == 0:
        torch.save(results, out)


def train(tok, data, output_dir, batch, masksub_type):
    counter = CountAllReduces()
    trainer = MaskSubTrainer(
        model=tiny_bert(vocab_size=len(tok)), train_dataset=data, data_collator=DataCollatorWithPadding(tok),
        callbacks=[counter],
        args=args(output_dir, masksub_type=masksub_type, per_device_train_batch_size=batch,
                  max_steps=3, optim="sgd", learning_rate=0.5, max_grad_norm=0.0, lr_scheduler_type="constant",
                  train_sampling_strategy="sequential",
                  ddp_backend="gloo" if "WORLD_SIZE" in os.environ else None))
    counter.trainer = trainer
    trainer.train()
    return {"weights": trainer.model.state_dict(), "logs": [h for h in trainer.state.log_history if "loss" in h],
            "world": trainer.args.world_size, "all_reduces": counter.calls}


if __name__ == "__main__":
    main(*sys.argv[1:])
