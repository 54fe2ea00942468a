"""Causal LMs with labels: every type trains, and under `mask` the relaxed loss pairs a main-branch position with
the sub-branch position that predicts the same next token (tiny random GPT-2 and Llama)."""
import pytest
import torch
from transformers import GPT2Config, GPT2ForTokenClassification, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from masksub_hf import MaskSubTrainer
from masksub_hf.models import find_family
from masksub_hf.models.base import SubBatch
from tests.helpers import args


def gpt2():
    return GPT2LMHeadModel(GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, pad_token_id=0))


def llama():
    return LlamaForCausalLM(LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, pad_token_id=0,
                                        attention_dropout=0.1))


def rows(n=8, length=12, prompt=4):
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        ids = torch.randint(5, 100, (length,), generator=g)
        labels = ids.clone()
        labels[:prompt] = -100  # the prompt is not trained on
        out.append({"input_ids": ids, "attention_mask": torch.ones(length, dtype=torch.long), "labels": labels})
    return out


def test_mask_pairs_positions_that_predict_the_same_next_token():
    model = gpt2()
    family = find_family(model)
    ids = torch.arange(10, 18)[None]  # 8 tokens
    labels = ids.clone()
    labels[0, :3] = -100
    index = torch.tensor([[0, 2, 3, 4, 6, 7]])  # kept original positions (1 and 5 dropped)
    sub = SubBatch({"input_ids": ids.gather(1, index)}, index, torch.ones_like(index, dtype=torch.bool), next_token=True)
    main = torch.arange(8.0)[None, :, None].expand(1, 8, 3)  # main prediction at position j is j
    subp = torch.arange(6.0)[None, :, None].expand(1, 6, 3) + 100  # sub-branch position k is 100 + k
    s, m = family.pair(subp, main, sub, {"input_ids": ids, "labels": labels})
    # 2->3 (label of 3 is kept), 3->4; not 0->2 (1 was dropped), 4->6, 7 (nothing follows); 2->3 needs label[3]
    assert m[:, 0].tolist() == [2.0, 3.0, 6.0] and s[:, 0].tolist() == [101.0, 102.0, 104.0]
    with family.mask(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, 0.5) as made:
        assert made.next_token  # an LM head predicts the next token ...
    classifier = GPT2ForTokenClassification(GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, pad_token_id=0))
    with family.mask(classifier, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, 0.5) as made:
        assert not made.next_token  # ... a token classifier labels each position itself


@pytest.mark.parametrize("masksub_type", ["drop", "path"])
def test_drop_and_path_pair_the_positions_whose_next_token_has_a_label(masksub_type):
    model = gpt2()
    family = find_family(model)
    ids = torch.arange(10, 16)[None]  # 6 tokens
    labels = ids.clone()
    labels[0, :3] = -100  # tokens 3, 4, 5 are trained: predicted at positions 2, 3, 4
    with getattr(family, masksub_type)(model, {"input_ids": ids}, 0.5) as made:
        assert made.next_token
    main = torch.arange(6.0)[None, :, None].expand(1, 6, 3)
    s, m = family.pair(main + 100, main, made, {"input_ids": ids, "labels": labels})
    assert m[:, 0].tolist() == [2.0, 3.0, 4.0] and s[:, 0].tolist() == [102.0, 103.0, 104.0]


@pytest.mark.parametrize("build", [gpt2, llama])
@pytest.mark.parametrize("masksub_type", ["mask", "drop", "path"])
def test_a_causal_lm_with_labels_trains_with_every_type(tmp_path, build, masksub_type):
    trainer = MaskSubTrainer(model=build(), train_dataset=rows(), args=args(
        tmp_path, masksub_type=masksub_type, max_steps=2, per_device_train_batch_size=4))
    trainer.train()
    losses = [h["loss_sub"] for h in trainer.state.log_history if "loss_sub" in h]
    assert len(losses) == 2 and all(0 < x < 10 for x in losses)
