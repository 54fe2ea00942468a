"""Non-finite training (masksub_hf/nonfinite.py): stop names the step and branch, skip skips and counts,
and neither touches the last good checkpoint. Tiny ViT on real digits, batches in a fixed order."""
import json
import math
import os

import pytest
import torch
from torch.utils.data import SequentialSampler
from transformers import Trainer, TrainerCallback

from masksub_hf import MaskSubConfig, MaskSubTrainer
from masksub_hf.losses import RELAXED_LOSSES
from masksub_hf.nonfinite import NonFiniteTrainingError
from tests.helpers import args, image_dataset, tiny_vit


class InOrder(MaskSubTrainer):
    """Batch k holds samples [k*B, (k+1)*B), so a poisoned sample lands in a known step."""

    def _get_train_sampler(self, train_dataset=None):
        return SequentialSampler(train_dataset if train_dataset is not None else self.train_dataset)


class Snapshots(TrainerCallback):
    """The weights after every optimizer step."""

    def __init__(self):
        self.weights = {}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.weights[state.global_step] = {k: v.clone() for k, v in model.state_dict().items()}


def poisoned(digits, bad_samples, value=float("inf")):
    """image_dataset's 32 digits, with one pixel of each bad sample set to `value`."""
    images, labels = digits
    x = torch.tensor(images[:32]).repeat_interleave(2, 1).repeat_interleave(2, 2)[:, None]
    for i in bad_samples:
        x[i, 0, 3, 3] = value
    return [{"pixel_values": x[i], "labels": int(labels[i])} for i in range(32)]


def checkpoint_dirs(output_dir):
    return sorted(n for n in os.listdir(output_dir) if n.startswith("checkpoint-"))


def files(checkpoint):
    return {name: open(os.path.join(checkpoint, name), "rb").read() for name in sorted(os.listdir(checkpoint))}


@pytest.mark.parametrize("masksub_type, mode", [("mask", None), ("none", "stop")])  # none guards only when asked
def test_an_inf_pixel_stops_at_its_step_and_leaves_the_last_checkpoint_alone(masksub_type, mode, digits, tmp_path):
    # batch size 8: sample 17 is in step 3; checkpoints at every step
    trainer = InOrder(model=tiny_vit(), train_dataset=poisoned(digits, [17]),
                      args=args(tmp_path, masksub_type=masksub_type, masksub_nonfinite=mode, save_strategy="steps",
                                save_steps=1))
    saved = {}
    trainer.add_callback(type("Keep", (TrainerCallback,), {"on_save": lambda self, a, s, c, **k: saved.update(
        {s.global_step: files(os.path.join(a.output_dir, f"checkpoint-{s.global_step}"))})})())
    with pytest.raises(NonFiniteTrainingError) as err:
        trainer.train()
    message = str(err.value)
    assert message.startswith("step 3: the main-branch loss is ")  # the main branch sees the pixel first
    assert "checkpoint-2, is untouched" in message and "--learning_rate" in message
    assert checkpoint_dirs(tmp_path) == ["checkpoint-1", "checkpoint-2"]
    assert files(tmp_path / "checkpoint-2") == saved[2]
    assert trainer.state.global_step == 2


def test_an_exploding_learning_rate_stops_with_the_step_and_branch(digits, tmp_path):
    trainer = MaskSubTrainer(model=tiny_vit(), train_dataset=image_dataset(digits, n=32),
                             args=args(tmp_path, learning_rate=1e6, max_grad_norm=0.0, max_steps=20))
    with pytest.raises(NonFiniteTrainingError, match=r"^step \d+: the (main-branch loss|sub-branch loss|gradient norm) is"):
        trainer.train()
    assert 1 <= trainer.state.global_step < 19  # stopped early, did not run to the end
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())  # the bad step changed nothing


def test_the_sub_branch_is_named_when_only_it_goes_non_finite(digits, tmp_path, monkeypatch):
    trainer = InOrder(model=tiny_vit(), train_dataset=image_dataset(digits, n=32), args=args(tmp_path))
    real = RELAXED_LOSSES["softmax"]  # the sub-branch's loss goes NaN in step 2 only
    monkeypatch.setitem(RELAXED_LOSSES, "softmax", lambda sub, main: real(sub, main) * float("nan")
                        if trainer.state.global_step == 1 else real(sub, main))
    with pytest.raises(NonFiniteTrainingError, match=r"^step 2: the sub-branch loss is nan"):
        trainer.train()


@pytest.mark.parametrize("masksub_type", ["mask", "none"])
def test_skip_skips_that_step_counts_it_and_carries_on(masksub_type, digits, tmp_path):
    snaps = Snapshots()
    trainer = InOrder(model=tiny_vit(), train_dataset=poisoned(digits, [9]), callbacks=[snaps],
                      args=args(tmp_path, masksub_type=masksub_type, masksub_nonfinite="skip", max_steps=4,
                                save_strategy="steps", save_steps=1))
    trainer.train()
    assert trainer.nonfinite_skipped == 1
    for k, v in snaps.weights[1].items():  # step 2 held the inf pixel: the weights did not move
        assert torch.equal(v, snaps.weights[2][k]), k
    assert any(not torch.equal(v, snaps.weights[3][k]) for k, v in snaps.weights[2].items())
    assert all(torch.isfinite(v).all() for v in snaps.weights[4].values())
    logs = [e for e in trainer.state.log_history if "loss" in e]
    assert [e["nonfinite_skipped"] for e in logs] == [0, 1, 1, 1]
    assert math.isnan(logs[1]["loss"]) and all(math.isfinite(logs[i]["loss"]) for i in (0, 2, 3))  # not 0.0
    if masksub_type == "mask":  # the skipped step is kept out of the branch means
        assert "loss_main" not in logs[1]
        assert all(math.isfinite(logs[i][k]) for i in (0, 2, 3) for k in ("loss_main", "loss_sub"))
    with open(tmp_path / "checkpoint-4" / "trainer_state.json") as f:
        assert json.load(f)["log_history"][-1]["nonfinite_skipped"] == 1


def test_skip_stops_after_n_in_a_row(digits, tmp_path):
    trainer = InOrder(model=tiny_vit(), train_dataset=poisoned(digits, range(8, 32)),
                      args=args(tmp_path, masksub_nonfinite="skip", masksub_nonfinite_max_skips=2, max_steps=4,
                                save_strategy="steps", save_steps=1))
    with pytest.raises(NonFiniteTrainingError, match=r"^step 3: .*2 optimizer steps in a row were skipped"):
        trainer.train()
    assert checkpoint_dirs(tmp_path) == ["checkpoint-1", "checkpoint-2"]  # step 2 was skipped, not lost


def test_finite_runs_stay_bit_identical_to_trainer_in_both_modes(digits, tmp_path):
    weights = []
    for cls, mode in ((Trainer, None), (MaskSubTrainer, "stop"), (MaskSubTrainer, "skip")):
        kw = {"masksub_type": "none"} if mode is None else {"masksub_type": "none", "masksub_nonfinite": mode}
        trainer = cls(model=tiny_vit(hidden_dropout_prob=0.1), train_dataset=image_dataset(digits),
                      args=args(tmp_path / str(mode), **kw))
        trainer.train()
        weights.append(trainer.model.state_dict())
    for other in weights[1:]:
        for k, v in weights[0].items():
            assert torch.equal(v, other[k]), k


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="--masksub_nonfinite 'ignore' is unknown; choose one of stop, skip, off"):
        MaskSubConfig(output_dir="x", masksub_nonfinite="ignore")
    with pytest.raises(ValueError, match="--masksub_nonfinite_max_skips must be a positive integer; got 0"):
        MaskSubConfig(output_dir="x", masksub_nonfinite="skip", masksub_nonfinite_max_skips=0)
