"""TRL's SFTTrainer with MaskSub (both class orders, and MaskSubMixin): it trains and perturbs, each step costs two
forwards (the main prediction comes from the loss forward, rebuilt from its fused LM head), and what cannot be
rebuilt is refused."""
import dataclasses

import pytest
import torch
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

from masksub_hf import MaskSubConfig, MaskSubMixin, MaskSubTrainer

trl = pytest.importorskip("trl")


@dataclasses.dataclass
class SFTMaskSubConfig(MaskSubConfig, trl.SFTConfig):
    """The argument combination: MaskSub's fields and SFTTrainer's."""


class MaskSubFirst(MaskSubTrainer, trl.SFTTrainer):
    pass


class SFTFirst(trl.SFTTrainer, MaskSubTrainer):
    pass


class Mixed(MaskSubMixin, trl.SFTTrainer):
    pass


@pytest.fixture()
def tok(tiny_bert_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    tokenizer.eos_token = "[SEP]"
    return tokenizer


def sft(cls, tok, movie_reviews, tmp_path, masksub_type, **config):
    from datasets import Dataset

    texts = [t for t, _ in movie_reviews[:64]]
    data = Dataset.from_dict({"prompt": texts[:32], "completion": texts[32:]})
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, pad_token_id=0,
                                       eos_token_id=tok.eos_token_id, **config))
    args = SFTMaskSubConfig(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, report_to=[],
                            use_cpu=True, save_strategy="no", masksub_type=masksub_type, logging_steps=1, max_length=40,
                            disable_tqdm=True)
    return cls(model=model, args=args, train_dataset=data, processing_class=tok)


@pytest.mark.parametrize("cls", [MaskSubFirst, SFTFirst, Mixed])
@pytest.mark.parametrize("masksub_type", ["mask", "drop"])
def test_sft_trains_with_two_forwards_a_step(cls, masksub_type, tok, movie_reviews, tmp_path):
    trainer = sft(cls, tok, movie_reviews, tmp_path, masksub_type)
    forwards = []
    trainer.model.register_forward_hook(lambda m, a, out: forwards.append(out))
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss_sub" in h]
    assert len(logged) == 2 and all(h["loss_sub"] > 0 and h["loss_main"] > 0 for h in logged)
    assert len(forwards) == 2 * 2  # main (fused head) + sub-branch per step; SFT alone would add a third
    assert "log_probs" in forwards[0] and forwards[1].logits is not None


def test_the_rebuilt_main_prediction_is_the_models_own_logits(tok, movie_reviews, tmp_path):
    trainer = sft(MaskSubFirst, tok, movie_reviews, tmp_path, "drop")
    model = trainer.model
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["labels"].eq(-100).any()  # the prompt is not trained on
    model.eval()  # deterministic: the fused forward and the plain one must agree
    _, prediction = trainer.main_branch(model, batch)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert prediction.shape == logits.shape and torch.allclose(prediction, logits, atol=1e-5)


def test_a_fused_head_that_cannot_be_rebuilt_is_refused(tok, movie_reviews, tmp_path):
    # TRL soft-caps the fused head's logits from this config entry; the plain LM head does not know it
    trainer = sft(MaskSubFirst, tok, movie_reviews, tmp_path, "drop", final_logit_softcapping=0.5)
    batch = next(iter(trainer.get_train_dataloader()))
    with pytest.raises(ValueError, match="do not give the log-probabilities"):
        trainer.main_branch(trainer.model, batch)


def test_a_mixin_after_trainer_is_refused_at_class_definition():
    with pytest.raises(TypeError, match=r"MaskSubMixin must come before SFTTrainer"):
        class Wrong(trl.SFTTrainer, MaskSubMixin):
            pass
