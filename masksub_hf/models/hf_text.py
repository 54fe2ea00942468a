"""HF text encoders with absolute position embeddings (BERT, RoBERTa, DistilBERT, ELECTRA, ALBERT...)."""
from contextlib import contextmanager

import torch

from ..perturb import gather_tokens, keep_indices
from .base import Family, SubBatch


def _embeddings(model):
    return getattr(getattr(model, "base_model", model), "embeddings", None)


class TextEncoderFamily(Family):
    name = "HF text encoders (BERT, RoBERTa, DistilBERT, ELECTRA, ALBERT)"
    mask_doc = "drops real tokens, [CLS] kept, original positions"

    def matches(self, model):
        emb = _embeddings(model)
        return emb is not None and hasattr(emb, "word_embeddings") and hasattr(emb, "position_embeddings")

    def mask_kind(self, model):
        return "tokens dropped"

    @staticmethod
    def original_positions(model, inputs):
        """The position ids the model would give the full sequence."""
        ids = inputs["input_ids"]
        if inputs.get("position_ids") is not None:
            return inputs["position_ids"].expand_as(ids)
        pad = getattr(_embeddings(model), "padding_idx", None)
        if pad is not None:  # RoBERTa numbers real tokens from padding_idx + 1
            real = ids.ne(pad).long()
            return real.cumsum(1) * real + pad
        return torch.arange(ids.shape[1], device=ids.device).expand_as(ids)

    @contextmanager
    def mask(self, model, inputs, ratio):
        """Drop `ratio` of each sample's real tokens, keep [CLS], keep the original positions."""
        if "input_ids" not in inputs:
            raise ValueError("--masksub_type mask on a text model needs input_ids in the batch.")
        ids = inputs["input_ids"]
        attention = inputs.get("attention_mask")
        valid = attention.bool() if attention is not None else torch.ones_like(ids, dtype=torch.bool)
        index, kept = keep_indices(valid, ratio, num_prefix=1)
        pad_id = getattr(model.config, "pad_token_id", None) or 0
        sub = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask", "position_ids")}
        sub["input_ids"] = gather_tokens(ids, index).masked_fill(~kept, pad_id)
        sub["attention_mask"] = kept.long()
        if inputs.get("token_type_ids") is not None:
            sub["token_type_ids"] = gather_tokens(inputs["token_type_ids"], index).masked_fill(~kept, 0)
        positions = gather_tokens(self.original_positions(model, inputs), index)
        # every family computes its own positions from the (now shorter) input: replace them where they are used
        handle = _embeddings(model).position_embeddings.register_forward_pre_hook(lambda m, args: (positions,))
        try:
            yield SubBatch(sub, index, kept)
        finally:
            handle.remove()
