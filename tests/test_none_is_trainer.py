"""`masksub_type none` is transformers.Trainer: the Trainer behaviours a drop-in must keep, run on both and
compared (the NaN/inf logging filter, resume with an identical log_history, the resume message,
compute_loss_func with num_items_in_batch). Tiny ViT on real digits."""
import math

import pytest
import torch
from transformers import Trainer, TrainerCallback

from masksub_hf import MaskSubTrainer
from tests.helpers import args, image_dataset, tiny_vit
from tests.test_nonfinite import poisoned

# the keys transformers' own resume tests leave out: timings, and train_loss (the mean over the steps of this train()
# call, so a resumed run's differs from the uninterrupted run's in Trainer too)
TIMING = ("train_runtime", "train_samples_per_second", "train_steps_per_second", "total_flos", "train_loss")


def history(trainer):
    """log_history without the timings (which differ between any two runs), NaN made comparable."""
    def clean(value):
        return "nan" if isinstance(value, float) and math.isnan(value) else value
    return [{k: clean(v) for k, v in entry.items() if k not in TIMING} for entry in trainer.state.log_history]


class StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        control.should_training_stop = state.global_step >= self.step


def train(cls, tmp_path, data, resume=None, **kw):
    trainer = cls(model=tiny_vit(), train_dataset=data, args=args(tmp_path, **kw))
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def same_weights(a, b):
    for (name, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(x, y), name


def test_a_nan_loss_trains_on_and_is_filtered_as_trainer_does(digits, tmp_path):
    """Trainer trains through a non-finite loss and logs the filtered value; none must not stop it."""
    runs = [train(cls, tmp_path / cls.__name__, poisoned(digits, [3], value=float("nan")), masksub_type="none",
                  max_steps=4) for cls in (Trainer, MaskSubTrainer)]
    assert runs[1].state.global_step == 4  # not stopped by a guard nobody asked for
    assert history(runs[0]) == history(runs[1])
    assert all(math.isfinite(h["loss"]) for h in history(runs[1]) if "loss" in h)  # logging_nan_inf_filter


@pytest.mark.parametrize("masksub_type", ["none", "mask"])
def test_a_resumed_run_logs_the_uninterrupted_history(digits, tmp_path, masksub_type):
    kw = dict(masksub_type=masksub_type, max_steps=4, save_strategy="steps", save_steps=2)
    data = image_dataset(digits)
    whole = train(MaskSubTrainer, tmp_path / "whole", data, **kw)
    cut = MaskSubTrainer(model=tiny_vit(), train_dataset=data, args=args(tmp_path / "cut", **kw),
                         callbacks=[StopAt(2)])  # the same run, killed after its checkpoint at step 2
    cut.train()
    assert cut.state.global_step == 2
    resumed = train(MaskSubTrainer, tmp_path / "cut", data, resume=str(tmp_path / "cut" / "checkpoint-2"), **kw)
    assert history(resumed) == history(whole)
    same_weights(whole, resumed)
    if masksub_type == "none":
        assert history(whole) == history(train(Trainer, tmp_path / "trainer", data, **kw))
    else:
        assert all({"loss_main", "loss_sub"} <= set(h) for h in history(resumed) if "loss" in h)


def test_resume_true_without_a_checkpoint_says_what_trainer_says(digits, tmp_path):
    messages = []
    for cls in (Trainer, MaskSubTrainer):
        trainer = cls(model=tiny_vit(), train_dataset=image_dataset(digits), args=args(tmp_path, masksub_type="none"))
        with pytest.raises(ValueError) as err:
            trainer.train(resume_from_checkpoint=True)
        messages.append(str(err.value))
    assert messages[0] == messages[1] == f"No valid checkpoint found in output directory ({tmp_path})"


def summed_loss(seen):
    """The documented compute_loss_func shape: a sum over the items divided by num_items_in_batch."""
    def loss(outputs, labels, num_items_in_batch=None):
        seen.append(num_items_in_batch)
        return torch.nn.functional.cross_entropy(outputs.logits, labels, reduction="sum") / num_items_in_batch
    return loss


def mean_loss(outputs, labels, num_items_in_batch=None):
    return torch.nn.functional.cross_entropy(outputs.logits, labels)


@pytest.mark.parametrize("masksub_type", ["none", "mask"])
def test_compute_loss_func_with_num_items_in_batch(digits, tmp_path, masksub_type):
    """none: what Trainer hands over (the count of the whole accumulated batch). A MaskSub step hands each
    micro-batch its own count, so sum / num_items_in_batch is the per-micro-batch mean the step scales: the same
    training as a mean loss."""
    data = image_dataset(digits)
    kw = dict(masksub_type=masksub_type, max_steps=2, gradient_accumulation_steps=2, per_device_train_batch_size=4)
    runs, seen = {}, []
    for name, cls, loss in (("trainer", Trainer, summed_loss([])), ("sum", MaskSubTrainer, summed_loss(seen)),
                            ("mean", MaskSubTrainer, mean_loss)):
        if name == "trainer" and masksub_type != "none":
            continue
        runs[name] = cls(model=tiny_vit(), train_dataset=data, args=args(tmp_path / name, **kw),
                         compute_loss_func=loss)
        runs[name].train()
    if masksub_type == "none":
        same_weights(runs["trainer"], runs["sum"])
        assert [int(n) for n in seen] == [8, 8, 8, 8]  # Trainer's count: the two micro-batches of 4 together
    else:
        assert [int(n) for n in seen] == [4, 4, 4, 4]  # each micro-batch its own
        for (name, x), y in zip(runs["sum"].model.state_dict().items(), runs["mean"].model.state_dict().values()):
            assert torch.allclose(x, y, atol=1e-6), name


def test_the_scaling_warning_names_the_processes_too(tmp_path, caplog, monkeypatch):
    """Trainer multiplies a model-reduced loss by the process count (average_tokens_across_devices) when the model
    takes num_items_in_batch; BERT ignores it, so under DDP its loss is N times the mean: say so, as for accumulation."""
    from accelerate import Accelerator

    from masksub_hf.models import base_model_of
    from tests.helpers import tiny_bert

    trainer = MaskSubTrainer(model=tiny_bert(), args=args(tmp_path, masksub_type="none",
                                                          average_tokens_across_devices=True))
    monkeypatch.setattr(Accelerator, "num_processes", property(lambda self: 2))
    with caplog.at_level("WARNING", logger="masksub_hf.trainer"):
        trainer._warn_if_trainer_scales_wrongly(base_model_of(trainer.model))
    assert "2 (processes, average_tokens_across_devices) times those of one large batch" in caplog.text


def test_several_launched_processes_that_accelerate_runs_as_one_are_refused(tmp_path, monkeypatch, caplog):
    """torchrun without use_cpu on a CPU machine: accelerate counts one process, DDP never wraps the model. (The
    check runs at construction; here it is called again once the launcher's WORLD_SIZE is in place.)"""
    ours = MaskSubTrainer(model=tiny_vit(), args=args(tmp_path, masksub_type="mask"))
    plain = MaskSubTrainer(model=tiny_vit(), args=args(tmp_path, masksub_type="none"))
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match=r"one of 2 launched \(WORLD_SIZE\).*pass --use_cpu"):
        ours._check_processes()
    with caplog.at_level("WARNING", logger="masksub_hf.trainer"):
        plain._check_processes()  # none is Trainer: it says so, and trains as Trainer would
    assert "pass --use_cpu" in caplog.text
