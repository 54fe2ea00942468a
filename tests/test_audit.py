"""The runtime audit (perturb/audit.py): every sub-branch step proves its perturbation reached the model, and
the long-tail models whose plans used to be wrong (functional dropout, lists of lists, a convolutional front
end, landmark attention) are handled or refused at construction, never silently unperturbed."""
from contextlib import contextmanager

import pytest
import torch
from torch import nn
from transformers import (FalconConfig, FalconForSequenceClassification, FunnelConfig, FunnelForSequenceClassification,
                          HubertConfig, HubertForSequenceClassification, NystromformerConfig,
                          NystromformerForSequenceClassification, PretrainedConfig, PreTrainedModel)
from transformers.modeling_outputs import SequenceClassifierOutput

from masksub_hf import MaskSubTrainer
from masksub_hf.models import find_family
from masksub_hf.models.base import FAMILIES, Family
from masksub_hf.perturb import audit
from tests.helpers import args


def text_rows(n=16, length=12, labels=3):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 100, (n, length), generator=g)
    return [{"input_ids": ids[i], "attention_mask": torch.ones(length, dtype=torch.long), "labels": i % labels}
            for i in range(n)]


def falcon(dropout=0.0):
    return FalconForSequenceClassification(FalconConfig(
        vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, pad_token_id=0, num_labels=3,
        hidden_dropout=dropout, attention_dropout=dropout))


def funnel(block_sizes):
    return FunnelForSequenceClassification(FunnelConfig(vocab_size=1000, d_model=32, n_head=4, d_head=8, d_inner=64,
                                                        block_sizes=block_sizes, num_decoder_layers=1, num_labels=3))


def hubert():
    """DistilHuBERT-shaped: a 7-layer convolutional feature extractor, then 2 transformer layers."""
    return HubertForSequenceClassification(HubertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, conv_dim=(16,) * 7,
        conv_stride=(5, 2, 2, 2, 2, 2, 2), conv_kernel=(10, 3, 3, 3, 3, 2, 2), num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4, num_labels=3, layerdrop=0.0))  # every layer runs: counts are exact


def recorded(model, masksub_type, inputs, ratio=0.5):
    family = find_family(model)
    model.train()
    with audit.recording() as seen, getattr(family, masksub_type)(model, dict(inputs), ratio) as sub:
        out = model(**sub).logits
        audit.verify(seen, masksub_type, ratio, model, family)
    return seen, out


def train_two_steps(model, data, tmp_path, masksub_type):
    trainer = MaskSubTrainer(model=model, train_dataset=data, args=args(tmp_path, masksub_type=masksub_type,
                                                                        max_steps=2, per_device_train_batch_size=4))
    trainer.train()
    return trainer


def test_functional_dropout_read_from_the_config_is_raised_and_seen():
    """Falcon applies dropout functionally at config.hidden_dropout: DropSub raises the config rate too."""
    model = falcon(dropout=0.0)
    batch = {k: torch.stack([r[k] for r in text_rows(4)]) for k in ("input_ids", "attention_mask")}
    model.train()
    plain = model(**batch).logits
    seen, perturbed = recorded(model, "drop", batch)
    assert seen[audit.DROPOUT_RAN] > 0 and not torch.allclose(plain, perturbed)
    assert model.config.hidden_dropout == 0.0 and type(model.config).__name__ == "FalconConfig"  # restored
    assert "hidden_dropout" in find_family(model).describe(model, "drop")


@pytest.mark.parametrize("block_sizes, layers", [([2, 2], 4), ([4, 4, 4], 12)])
def test_path_reaches_every_layer_of_a_list_of_lists(block_sizes, layers):
    model = funnel(block_sizes)
    assert len(find_family(model).blocks(model)) == layers
    batch = {k: torch.stack([r[k] for r in text_rows(4)]) for k in ("input_ids", "attention_mask")}
    seen, _ = recorded(model, "path", batch)
    assert len([k for k in seen if isinstance(k, tuple) and k[0] == audit.UPDATE_DROPPED]) == layers


def test_path_takes_the_transformer_layers_not_the_convolutional_front_end():
    model = hubert()
    assert find_family(model).blocks(model) == list(model.hubert.encoder.layers)
    seen, _ = recorded(model, "path", {"input_values": torch.randn(2, 4000)})
    assert seen[audit.UPDATE_DROPPED] == 2


def test_landmark_attention_refuses_mask_at_construction(tmp_path):
    model = NystromformerForSequenceClassification(NystromformerConfig(
        vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        segment_means_seq_len=12, num_landmarks=4, num_labels=3))
    with pytest.raises(ValueError, match="segment_means_seq_len=12"):
        MaskSubTrainer(model=model, args=args(tmp_path, masksub_type="mask"))


@pytest.mark.parametrize("build, data, masksub_type", [
    (falcon, text_rows, "drop"), (falcon, text_rows, "path"),
    (lambda: funnel([2, 2]), text_rows, "path"), (lambda: funnel([4, 4, 4]), text_rows, "drop"),
    (hubert, lambda: [{"input_values": torch.randn(4000), "labels": i % 3} for i in range(8)], "path"),
    (hubert, lambda: [{"input_values": torch.randn(4000), "labels": i % 3} for i in range(8)], "drop"),
])
def test_the_long_tail_trains_with_its_perturbation_verified(tmp_path, build, data, masksub_type):
    trainer = train_two_steps(build(), data(), tmp_path, masksub_type)
    assert trainer.state.global_step == 2 and all("loss_sub" in h for h in trainer.state.log_history if "loss" in h)


# ---- plans that do not happen end in the audit's error ------------------------------------------
class Config(PretrainedConfig):
    model_type = "audit-probe"


class Unused(PreTrainedModel):
    """A dropout it never calls, and a 'layer stack' whose layers each change the shape (never residual)."""
    config_class = Config

    def __init__(self, config):
        super().__init__(config)
        self.unused_dropout = nn.Dropout(0.1)
        self.layers = nn.ModuleList([nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 6)),
                                     nn.Sequential(nn.Linear(6, 6), nn.Linear(6, 2))])
        self.post_init()

    def forward(self, x, labels=None):
        for layer in self.layers:
            x = layer(x)
        loss = None if labels is None else nn.functional.cross_entropy(x, labels)
        return SequenceClassifierOutput(loss=loss, logits=x)


class SilentMask(Family):
    """A family whose plan claims masking but whose mechanism never reaches the model."""
    name = "a family whose mask does nothing"

    def matches(self, model):
        return isinstance(model, Unused)

    @contextmanager
    def mask(self, model, inputs, ratio):
        yield inputs


@pytest.fixture
def silent_family():
    family = SilentMask()
    FAMILIES.insert(0, family)
    yield family
    FAMILIES.remove(family)


@pytest.mark.parametrize("masksub_type, what", [
    ("drop", "none of them ran in the sub-branch forward"),
    ("path", "no residual update was dropped"),
    ("mask", "the masking never reached the model"),
])
def test_a_plan_that_does_not_happen_stops_at_the_first_step(tmp_path, silent_family, masksub_type, what):
    data = [{"x": torch.randn(4), "labels": i % 2} for i in range(8)]
    trainer = MaskSubTrainer(model=Unused(Config()), train_dataset=data,
                             args=args(tmp_path, masksub_type=masksub_type, max_steps=2, per_device_train_batch_size=4))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with pytest.raises(audit.PerturbationNotApplied) as err:
        trainer.train()
    message = str(err.value)
    assert message.startswith(f"--masksub_type {masksub_type} did not happen on this Unused") and what in message
    assert "register_family" in message and trainer.state.global_step == 0
    assert all(torch.equal(v, before[k]) for k, v in trainer.model.state_dict().items())  # no step was taken


def test_a_list_of_single_layers_is_not_taken_for_residual_blocks():
    """x + dropout(linear(x)) keeps the residual outside the Linear: hooking the Linears as blocks would replace
    each one's output by its input, which is not stochastic depth. path is refused instead."""
    from masksub_hf.models.base import layer_stack

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers, self.norms = nn.ModuleList(nn.Linear(4, 4) for _ in range(3)), nn.ModuleList([nn.LayerNorm(4)])
            self.dropout = nn.Dropout(0.1)

    model = Model()
    assert layer_stack(model) == []
    assert "no stack of residual blocks" in find_family(model).refusal(model, "path")
