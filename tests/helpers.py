"""Tiny models and batches shared by the core tests (no hub, CPU)."""
import torch
from datasets import Dataset
from transformers import (BertConfig, BertForSequenceClassification, DistilBertConfig,
                          DistilBertForSequenceClassification, RobertaConfig, RobertaForSequenceClassification,
                          ViTConfig, ViTForImageClassification)

from masksub_hf import MaskSubConfig


def tiny_bert(num_labels=3, dropout=0.0, vocab_size=1000, **kw):
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, num_labels=num_labels,
                     hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, **kw)
    return BertForSequenceClassification(cfg)


def tiny_roberta(num_labels=3):
    torch.manual_seed(0)
    cfg = RobertaConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=130, num_labels=num_labels, pad_token_id=1,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return RobertaForSequenceClassification(cfg)


def tiny_distilbert(num_labels=3):
    torch.manual_seed(0)
    cfg = DistilBertConfig(vocab_size=1000, dim=32, n_layers=2, n_heads=2, hidden_dim=64, num_labels=num_labels,
                           dropout=0.0, attention_dropout=0.0, seq_classif_dropout=0.0)
    return DistilBertForSequenceClassification(cfg)


def tiny_vit(num_labels=10, image_size=16, **kw):
    torch.manual_seed(0)
    cfg = ViTConfig(image_size=image_size, patch_size=4, num_channels=1, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=2, intermediate_size=64, num_labels=num_labels, **kw)
    return ViTForImageClassification(cfg)


def text_dataset(tokenizer, reviews, n=32, max_length=24):
    """Real movie sentences, binary label from the human score; dynamic-length rows."""
    rows = reviews[:n]
    enc = tokenizer([t for t, _ in rows], truncation=True, max_length=max_length)
    return Dataset.from_dict({**enc, "labels": [int(s > 0) for _, s in rows]})


def text_batch(tokenizer, reviews, n=8, max_length=24):
    """One padded batch (padding really present: the sentences differ in length)."""
    enc = tokenizer([t for t, _ in reviews[:n]], truncation=True, max_length=max_length, padding=True,
                    return_tensors="pt")
    enc["labels"] = torch.tensor([int(s > 0) for _, s in reviews[:n]])
    return dict(enc)


def image_dataset(digits, n=32):
    """Real 8x8 digits, upscaled to 16x16 single-channel tensors."""
    images, labels = digits
    x = torch.tensor(images[:n]).repeat_interleave(2, 1).repeat_interleave(2, 2)[:, None]
    return Dataset.from_dict({"pixel_values": x.numpy(), "labels": labels[:n].tolist()}).with_format("torch")


def args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), per_device_train_batch_size=8, per_device_eval_batch_size=8,
                learning_rate=1e-3, max_steps=4, logging_steps=1, report_to=[], use_cpu=True, save_strategy="no",
                disable_tqdm=True, seed=0, dataloader_num_workers=0, masksub_type="mask")
    base.update(kw)
    return MaskSubConfig(**base)


def fixed_scores(monkeypatch):
    """Make token/patch masks a function of position only, so batch splits see the same masks."""
    import masksub_hf.perturb.tokens as tokens

    table = torch.rand(4096, generator=torch.Generator().manual_seed(1))
    monkeypatch.setattr(tokens, "random_scores", lambda shape, device: table[: shape[1]].expand(shape).to(device))
