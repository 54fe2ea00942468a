"""Encoder-decoders under Seq2SeqTrainer (MaskSubMixin composed with it): the sub-branch's decoder sees the
decoder input the main branch had (built from the labels), predictions pair position by position where labels
exist, with Trainer's default collator and with DataCollatorForSeq2Seq; what cannot run is refused at
construction. Tiny random T5, BART and a ViT-to-GPT-2 VisionEncoderDecoder."""
from dataclasses import dataclass

import pytest
import torch
from transformers import (AutoTokenizer, BartConfig, BartForConditionalGeneration, DataCollatorForSeq2Seq, GPT2Config,
                          Seq2SeqTrainer, Seq2SeqTrainingArguments, T5Config, T5ForConditionalGeneration, ViTConfig,
                          VisionEncoderDecoderConfig, VisionEncoderDecoderModel, default_data_collator)

from masksub_hf import MaskSubConfig, MaskSubMixin


@dataclass
class Seq2SeqMaskSubConfig(MaskSubConfig, Seq2SeqTrainingArguments):
    """The argument combination for a composed trainer: MaskSub's fields and Seq2SeqTrainer's."""


class Seq2SeqMaskSubTrainer(MaskSubMixin, Seq2SeqTrainer):
    pass


def t5():
    return T5ForConditionalGeneration(T5Config(vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                               decoder_start_token_id=0, pad_token_id=0, dropout_rate=0.1))


def bart():
    return BartForConditionalGeneration(BartConfig(
        vocab_size=100, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64, dropout=0.1))


def ved():
    encoder = ViTConfig(image_size=16, patch_size=4, num_channels=1, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=64, hidden_dropout_prob=0.1)
    decoder = GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, bos_token_id=1, eos_token_id=2)
    model = VisionEncoderDecoderModel(config=VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder))
    model.config.decoder_start_token_id, model.config.pad_token_id = 1, 0
    return model


def rows(n=8, source=10, target=10, ragged=False, images=False):
    """Targets as long as the sources: the case where BART used to build the sub decoder input from the source."""
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        cut = target - (i % 3 if ragged else 0)
        labels = torch.randint(3, 100, (cut,), generator=g)
        row = {"labels": labels.tolist() if ragged else labels}
        if images:
            row["pixel_values"] = torch.randn(1, 16, 16, generator=g)
        else:
            ids = torch.randint(3, 100, (source - (i % 2 if ragged else 0),), generator=g)
            row["input_ids"] = ids.tolist() if ragged else ids
            if not ragged:
                row["attention_mask"] = torch.ones_like(ids)
        out.append(row)
    return out


def trainer_for(model, data, tmp_path, masksub_type, collator=default_data_collator):
    config = Seq2SeqMaskSubConfig(output_dir=str(tmp_path), masksub_type=masksub_type, max_steps=2,
                                  per_device_train_batch_size=4, learning_rate=1e-3, report_to=[], use_cpu=True,
                                  save_strategy="no", disable_tqdm=True, logging_steps=1)
    return Seq2SeqMaskSubTrainer(model=model, args=config, train_dataset=data, data_collator=collator)


def decoder_of(model):
    return model.decoder if isinstance(model, VisionEncoderDecoderModel) else model.get_decoder()


@pytest.mark.parametrize("build", [t5, bart])
@pytest.mark.parametrize("masksub_type", ["drop", "path"])
def test_the_sub_branch_decoder_sees_the_main_decoder_input(tmp_path, build, masksub_type):
    model = build()
    seen = []
    decoder_of(model).register_forward_pre_hook(
        lambda m, args, kwargs: seen.append((kwargs.get("input_ids") if kwargs.get("input_ids") is not None
                                             else args[0]).clone()), with_kwargs=True)
    trainer = trainer_for(model, rows(), tmp_path, masksub_type)
    trainer.train()
    assert trainer.state.global_step == 2 and len(seen) == 4  # main and sub, two steps
    for main, sub in (seen[0:2], seen[2:4]):
        assert torch.equal(main, sub)
    assert all("loss_sub" in h for h in trainer.state.log_history if "loss" in h)


@pytest.mark.parametrize("build", [t5, bart])
def test_with_the_seq2seq_collator_padded_labels_are_left_out_of_the_relaxed_loss(tmp_path, tiny_bert_dir, build):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    model = build()
    collator = DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100)
    batch = collator(rows(4, ragged=True))
    assert "decoder_input_ids" in batch and (batch["labels"] == -100).any()
    trainer = trainer_for(model, rows(ragged=True), tmp_path, "drop", collator)
    family, unwrapped = trainer.family, trainer.model
    sub = family.sub_inputs(unwrapped, batch)
    logits = torch.randn(*batch["labels"].shape, 100)
    sub_pred, main_pred = family.pair(logits + 1, logits, sub, batch)
    assert sub_pred.shape == main_pred.shape == (int((batch["labels"] != -100).sum()), 100)
    trainer.train()
    assert trainer.state.global_step == 2


def test_vision_encoder_decoder_is_no_image_classifier(tmp_path):
    model = ved()
    with pytest.raises(ValueError, match="--masksub_type mask cannot perturb this VisionEncoderDecoderModel"):
        trainer_for(model, rows(images=True), tmp_path, "mask")
    for masksub_type in ("drop", "path"):
        trainer = trainer_for(ved(), rows(images=True), tmp_path / masksub_type, masksub_type)
        trainer.train()
        assert trainer.state.global_step == 2
