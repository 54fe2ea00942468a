"""HF text models: encoders and decoder classifiers drop tokens; any other text model masks them in place.

Dropping keeps each kept token's original position through the model's position scheme
(text_positions: absolute tables, rotary position_ids, DeBERTa's relative distances, MPNet's
relative bias). Which tokens must stay is the only difference between encoders and decoders:
the first token ([CLS], which encoders pool) or the last real token (which decoder classifiers
pool). Multiple-choice batches (B, C, L) have each choice masked as a sequence of its own.
"""
import logging
import os
import weakref
from contextlib import contextmanager

import torch
from torch import nn

from ..perturb import keep_indices
from ..perturb.text_tokens import first_real, last_real, replaced_tokens, shorter_batch, special_tokens, token_rows
from ..perturb.audit import INPUT_MASKED, note
from .base import Family, SubBatch, accepts
from .text_positions import original_positions, original_positions_kept, schemes_of, unknown_positions

logger = logging.getLogger(__name__)


def is_text_model(model: nn.Module) -> bool:
    """A model fed token ids: its forward takes input_ids and its input embedding is a token table."""
    try:
        table = model.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        return False
    return isinstance(table, nn.Embedding) and accepts(model, "input_ids")


def is_causal(model: nn.Module) -> bool:
    """Decoder attention: some attention module says is_causal (GPT-2, Llama, Qwen2...; never BERT-style encoders)."""
    return any(getattr(m, "is_causal", None) is True for m in model.modules())


def head_refusal(model: nn.Module):
    """Heads whose output MaskSub's relaxed losses do not cover, refused for every type at construction."""
    if type(model).__name__.endswith("ForQuestionAnswering"):
        return ("its output is start/end logits over token positions, not a prediction per example or per token "
                "(`logits`) for the relaxed loss to match")
    return None


def _check_ids(inputs):
    if "input_ids" not in inputs:
        raise ValueError("--masksub_type mask on a text model needs input_ids in the batch (inputs_embeds alone "
                         "cannot be masked); pass input_ids.")


class _TokenDroppingFamily(Family):
    """Drop `ratio` of each row's real tokens, keeping `always_kept`, with the original positions."""

    modality = "text"
    keeps = "the first token"
    causal = False  # which side of is_causal() the family takes

    def matches(self, model):
        config = getattr(model, "config", None)
        return (is_text_model(model) and not getattr(config, "is_encoder_decoder", False)
                and is_causal(model) == self.causal and unknown_positions(model) is None)

    def drops_tokens(self, model):
        return True

    def always_kept(self, model, rows, valid):
        raise NotImplementedError

    def original_positions(self, model, inputs):
        """The position ids the model gives the full batch, shaped like input_ids."""
        _, rows, _ = token_rows(inputs)
        given = inputs.get("position_ids")
        return original_positions(model, rows, given.reshape(-1, given.shape[-1]) if given is not None else None) \
            .reshape(inputs["input_ids"].shape)

    @contextmanager
    def mask(self, model, inputs, ratio):
        _check_ids(inputs)
        _, rows, valid = token_rows(inputs)
        full = self.original_positions(model, inputs).reshape(rows.shape)
        always = self.always_kept(model, rows, valid)
        if inputs.get("position_ids") is not None:  # packed rows: each sequence restarts its positions, and
            # flash attention finds the boundaries there (position == the row's first position): keep every start
            always = always | (valid & full.eq(full.min(1, keepdim=True).values))
        index, kept = keep_indices(valid, ratio, always=always)
        positions = full.gather(1, index)
        pad = getattr(model.config, "pad_token_id", None)
        with original_positions_kept(model, index, positions) as overrides:
            sub = shorter_batch(inputs, index, kept, pad if pad is not None else 0, overrides)
            note(INPUT_MASKED)
            yield SubBatch(sub, index, kept, next_token=self.predicts_next_token(model))

    def predicts_next_token(self, model) -> bool:
        return self.causal and model.get_output_embeddings() is not None  # an LM head, not a token classifier

    def refusal(self, model, masksub_type):
        landmarks = getattr(model.config, "segment_means_seq_len", None)
        if masksub_type == "mask" and landmarks:  # Nystromformer: landmarks are means over fixed-length segments
            return (f"its landmark attention averages segments of a fixed sequence length (segment_means_seq_len="
                    f"{landmarks}), so a sub-branch with fewer tokens cannot run")
        return head_refusal(model) or super().refusal(model, masksub_type)

    def describe(self, model, masksub_type, ratio=0.5):
        if masksub_type != "mask":
            return super().describe(model, masksub_type, ratio)
        if self.refusal(model, "mask"):
            return f"MaskSub: refused: {self.refusal(model, 'mask')}"
        schemes = ", ".join(s.name for s in schemes_of(model))
        return (f"MaskSub: tokens dropped (each sequence keeps {self.keeps} and drops {ratio} of its other real "
                f"tokens); original positions kept through: {schemes}{_neighbour_note(model)}")


def _neighbour_note(model):
    """What still counts neighbours among the kept tokens rather than in the original text."""
    config = model.config
    window = next((getattr(config, a) for a in ("local_attention", "sliding_window", "attention_window")
                   if getattr(config, a, None)), None)
    if window:
        return f"; its local attention window ({window}) counts kept tokens, so it reaches further in the original text"
    if getattr(config, "conv_kernel_size", 0) or getattr(config, "model_type", "") == "convbert":
        return "; its convolution over neighbouring tokens sees the kept neighbours"
    return ""


class TextEncoderFamily(_TokenDroppingFamily):
    """Bidirectional encoders (BERT, RoBERTa, DistilBERT, ALBERT, ELECTRA, XLM-R, MPNet, DeBERTa-v2/v3,
    ModernBERT): the first token ([CLS]) always stays."""

    priority = 50
    name = "HF text encoders (BERT, RoBERTa, DistilBERT, ALBERT, ELECTRA, XLM-R, MPNet, DeBERTa-v2/v3, ModernBERT)"
    keeps = "its first token ([CLS])"
    mask_doc = ("drops real tokens, [CLS] kept; each kept token keeps its original position (absolute table, "
                "rotary `position_ids`, DeBERTa's relative distances, MPNet's relative bias); refused for fixed-length "
                "landmark attention (Nystromformer)")

    def always_kept(self, model, rows, valid):
        return first_real(valid)


class DecoderTextFamily(_TokenDroppingFamily):
    """Decoder-only models (GPT-2, Llama, Qwen2, Mistral, Gemma...): the last real token always stays,
    since *ForSequenceClassification pools the rightmost token that is not pad_token_id (left or right
    padding). The shorter batch is right-padded with pad_token_id, so that token is still the one pooled."""

    priority = 90
    name = "HF decoder models (GPT-2, Llama, Qwen2, Mistral, Gemma)"
    keeps = "its last real token (the one a sequence classifier pools)"
    mask_doc = ("drops real tokens, the pooled last real token kept (left or right padding), original "
                "`position_ids`; needs `config.pad_token_id` for sequence classifiers")

    causal = True

    @staticmethod
    def pools_last_token(model):
        return type(model).__name__.endswith("ForSequenceClassification")

    def always_kept(self, model, rows, valid):
        pad = getattr(model.config, "pad_token_id", None)
        if self.pools_last_token(model) and pad is not None:  # the token the classifier pools, as it finds it
            return last_real(valid & rows.ne(pad))
        return last_real(valid)

    @contextmanager
    def drop(self, model, inputs, ratio):
        with super().drop(model, inputs, ratio) as sub:
            yield SubBatch(sub, next_token=self.predicts_next_token(model))

    @contextmanager
    def path(self, model, inputs, ratio):
        with super().path(model, inputs, ratio) as sub:
            yield SubBatch(sub, next_token=self.predicts_next_token(model))

    def pair(self, sub_pred, main_pred, sub, inputs):
        """A causal LM's position j predicts token j + 1: positions pair where the token they predict has a label
        (not -100) or, without labels, is real. Under `mask` the sub-branch's k-th position predicts its next KEPT
        token: the two predict the same token only where that next kept token is the next original one."""
        ids = inputs.get("input_ids")
        if not sub.next_token or main_pred.dim() < 3 or ids is None or main_pred.shape[1] != ids.shape[-1]:
            return super().pair(sub_pred, main_pred, sub, inputs)
        labels = inputs.get("labels")
        if labels is not None and labels.shape == ids.shape:
            targets = labels.ne(-100)
        else:
            mask = inputs.get("attention_mask")
            targets = mask.bool() if mask is not None else torch.ones_like(ids, dtype=torch.bool)
        if sub.index is None:  # same positions on both branches (drop, path)
            valid = torch.cat([targets[:, 1:], torch.zeros_like(targets[:, :1])], 1)
            return sub_pred[valid], main_pred[valid]
        index, kept = sub.index, sub.kept
        following = torch.cat([index[:, 1:], index[:, -1:]], 1)
        adjacent = kept & torch.cat([kept[:, 1:], torch.zeros_like(kept[:, :1])], 1) & following.eq(index + 1)
        valid = adjacent & targets.gather(1, following)
        main = main_pred.gather(1, index[..., None].expand(-1, -1, main_pred.shape[-1]))
        return sub_pred[valid], main[valid]

    def refusal(self, model, masksub_type):
        no_pad = getattr(model.config, "pad_token_id", None) is None
        if masksub_type == "mask" and self.pools_last_token(model) and no_pad:
            return ("config.pad_token_id is not set, so the classifier cannot find the last real token it pools in a "
                    "padded batch (set model.config.pad_token_id = tokenizer.pad_token_id)")
        return super().refusal(model, masksub_type)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model",
                   "sentencepiece.bpe.model", "tokenizer.model", "merges.txt")  # any of them: a saved tokenizer


def _tokenizer_mask_id(model):
    """The mask token id of the tokenizer saved beside the model (local files only), or None."""
    path = getattr(model.config, "_name_or_path", "") or ""
    if not path:
        return None
    if os.path.isdir(path) and not any(os.path.exists(os.path.join(path, f)) for f in TOKENIZER_FILES):
        return None  # transformers would build a placeholder tokenizer from the config alone: not the model's
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception:  # no tokenizer saved there: the caller says what to set
        return None
    return getattr(tokenizer, "mask_token_id", None)


class MaskTokenTextFamily(Family):
    """Any other text model (encoder-decoders, models whose positions no scheme knows): `ratio` of each
    row's real tokens are replaced by the mask token, in place. The sequence keeps its length, so there
    is no speed-up. The first and last real tokens and the config's special tokens (bos, eos, sep, cls)
    are never replaced: they are what models pool or count."""

    priority = 100  # any other text model: tried last
    name = "other HF text models (mask token in place)"
    modality = "text"
    mask_doc = ("replaces real tokens by the mask token in place (no speed-up), first/last and special tokens kept; "
                "refused without a known mask token id")

    def __init__(self):
        self._mask_ids = weakref.WeakKeyDictionary()
        self._warned = False

    def matches(self, model):
        return is_text_model(model)

    masked_kind = "mask token"

    def mask_token_id(self, model):
        """config.mask_token_id, else the mask token of the tokenizer saved with the model (looked up once)."""
        found = getattr(model.config, "mask_token_id", None)
        if found is not None:
            return found
        if model not in self._mask_ids:
            self._mask_ids[model] = _tokenizer_mask_id(model)
        return self._mask_ids[model]

    def refusal(self, model, masksub_type):
        if head_refusal(model):
            return head_refusal(model)
        if masksub_type == "mask" and self.mask_token_id(model) is None:
            where = getattr(model.config, "_name_or_path", "") or "(no directory)"
            reason = ("it is an encoder-decoder model" if getattr(model.config, "is_encoder_decoder", False)
                      else unknown_positions(model) or "it has no position scheme that token dropping knows")
            return (f"its tokens cannot be dropped ({reason}), and no mask token id is known to mask them in place: "
                    f"config.mask_token_id is not set and no tokenizer with a mask token is saved at {where} "
                    "(set model.config.mask_token_id = tokenizer.mask_token_id)")
        return super().refusal(model, masksub_type)

    @staticmethod
    def protected_ids(model):
        config = model.config
        names = ("bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id", "pad_token_id",
                 "decoder_start_token_id")
        ids = set()
        for name in names:
            value = getattr(config, name, None)
            ids.update(value if isinstance(value, (list, tuple)) else [value])
        return sorted(i for i in ids if isinstance(i, int))

    @contextmanager
    def mask(self, model, inputs, ratio):
        _check_ids(inputs)
        mask_id = self.mask_token_id(model)
        if mask_id is None:
            raise ValueError(self.refusal(model, "mask"))
        if not self._warned:
            self._warned = True
            logger.warning(f"MaskSub on {type(model).__name__}: its tokens are replaced by the mask token "
                           f"(id {mask_id}) in place, not dropped, so the sub-branch costs as much as the main one.")
        lead, rows, valid = token_rows(inputs)
        protect = first_real(valid) | last_real(valid) | special_tokens(rows, self.protected_ids(model))
        replaced = replaced_tokens(valid, protect, ratio)
        sub = dict(inputs)
        sub["input_ids"] = rows.masked_fill(replaced, mask_id).reshape(inputs["input_ids"].shape)
        note(INPUT_MASKED)
        if getattr(model.config, "is_encoder_decoder", False):  # its per-token outputs follow the decoder's tokens
            yield sub
            return
        index = torch.arange(rows.shape[1], device=rows.device).expand(rows.shape)
        yield SubBatch(sub, index, ~replaced)  # per-token heads learn only where the token was not replaced

    def describe(self, model, masksub_type, ratio=0.5):
        if masksub_type != "mask":
            return super().describe(model, masksub_type, ratio)
        if self.refusal(model, "mask"):
            return f"MaskSub: refused: {self.refusal(model, 'mask')}"
        return (f"MaskSub: {ratio} of each sequence's real tokens replaced by the mask token id "
                f"{self.mask_token_id(model)} in place (first, last and special tokens kept); no speed-up")


__all__ = ["TextEncoderFamily", "DecoderTextFamily", "MaskTokenTextFamily"]
