"""transformers image-text models (CLIPModel, SiglipModel, Siglip2Model, VisionTextDualEncoderModel...) under MaskSubTrainer.

They are trained as Trainer-based scripts train them (transformers' contrastive image-text example):
batches of input_ids, attention_mask and pixel_values with return_loss=True, the model's own loss
as the main branch, `logits_per_image` (the image x text similarity matrix) as the prediction.

- relaxed loss: 'clip' (soft cross-entropy both ways over the matrix) for softmax models,
  'siglip' (pairwise sigmoid BCE against sigmoid(main), SigLIP's normalisation) for models with a
  `logit_bias` (SigLIP, SigLIP 2). `--masksub_loss` overrides, and so does `model.masksub_loss`.
- mask: the vision tower drops patch tokens after its position embedding, keeping its leading
  tokens (CLS; SigLIP has none, so its attention-pooling head sees only the kept patches); a tower
  without patch tokens (a CNN in a dual encoder) gets pixel blocks zeroed instead. With
  `mask_text` (`model.mask_text = True`, or `ImageTextFamily(mask_text=True)` registered) the
  text tower also drops caption tokens, keeping the token it pools (CLIP: the EOS token, found as
  transformers finds it; SigLIP: the last token; BERT-like towers: [CLS]), fed with their original
  `position_ids` through the model's own argument.
- DDP: these models compute the similarity matrix and their loss on each process's local batch
  (no all-gather, unlike open_clip's ClipLoss), so the relaxed loss does too: the sub-branch
  matches the main branch it is paired with. N processes x batch B therefore train as one
  process with N accumulation steps of batch B (for Trainer and MaskSub alike), not as one
  process with batch N x B, whose matrix has more negatives.
"""
from contextlib import ExitStack, contextmanager
from typing import Dict, Optional

import torch
from torch import nn

from ..perturb import PIXEL_BLOCKS, block_mask, dropped_output_tokens, gather_tokens, keep_indices
from ..perturb.text_tokens import shorter_batch
from .base import Family, SubBatch, accepts
from .hf_vit import prefix_tokens
from .text_positions import original_positions

TEXT_POOLING = {"eos": "the EOS token", "last": "the last token", "first": "the first ([CLS]) token"}


def vision_token_embeddings(vision: nn.Module) -> Optional[nn.Module]:
    """The vision tower's embedding module when it makes a flat sequence of patch tokens with absolute position
    embeddings (ViT-like: CLIP, SigLIP, ViT, DeiT, DINOv2), else None: CNN towers have no tokens, and hierarchical
    ones (Swin: windows over the full grid) cannot lose any."""
    emb = getattr(vision, "embeddings", None)
    if not isinstance(emb, nn.Module) or getattr(getattr(vision, "config", None), "depths", None):
        return None
    patches = any(isinstance(getattr(emb, n, None), nn.Module) for n in ("patch_embedding", "patch_embeddings"))
    positions = any(getattr(emb, n, None) is not None for n in ("position_embedding", "position_embeddings"))
    return emb if patches and positions else None


def text_pooling(text: nn.Module) -> Optional[str]:
    """Which token the text tower pools: 'eos' (CLIP text), 'last' (SigLIP text), 'first' (BERT-like), or None."""
    kind = getattr(getattr(text, "config", None), "model_type", "") or ""
    if kind.startswith("siglip"):
        return "last"
    if hasattr(text, "eos_token_id") and kind.endswith("clip_text_model"):
        return "eos"
    emb = getattr(getattr(text, "base_model", text), "embeddings", None)
    if emb is not None and hasattr(emb, "word_embeddings") and hasattr(emb, "position_embeddings"):
        return "first"
    return None


def eos_positions(text: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Where CLIPTextModel reads its pooled output: the highest id with the legacy eos_token_id 2, else the first
    eos_token_id (padding may use the same id)."""
    ids = input_ids.to(torch.int)
    if text.eos_token_id == 2:
        return ids.argmax(-1)
    return (ids == text.eos_token_id).int().argmax(-1)


class ImageTextFamily(Family):
    priority = 10  # vision_model + text_model: before any tower's own family
    name = "HF image-text models (CLIPModel, SiglipModel, VisionTextDualEncoderModel: vision_model + text_model)"
    modality = "image-text"
    mask_doc = ("drops vision patch tokens after the position embedding (CLS/registers kept; CNN or windowed "
                "towers: pixel blocks); with `mask_text`, also caption tokens, the pooled token kept")

    def __init__(self, mask_text: bool = False):
        self.mask_text = mask_text

    def matches(self, model):
        return isinstance(getattr(model, "vision_model", None), nn.Module) and \
            isinstance(getattr(model, "text_model", None), nn.Module)

    def masks_text(self, model) -> bool:
        return bool(self.mask_text or getattr(model, "mask_text", False))

    def loss_name(self, model):
        own = getattr(model, "masksub_loss", None)
        if own is not None:
            return own
        return "siglip" if isinstance(getattr(model, "logit_bias", None), torch.Tensor) else "clip"

    masked_kind = PIXEL_BLOCKS  # a vision tower without patch tokens

    def drops_tokens(self, model):
        return vision_token_embeddings(model.vision_model) is not None

    def describe(self, model, masksub_type, ratio=0.5):
        line = super().describe(model, masksub_type, ratio)
        if masksub_type == "mask":
            line += " in the vision tower"
            if self.masks_text(model):
                pooled = TEXT_POOLING.get(text_pooling(model.text_model), "an unknown pooled token")
                line += f", and caption tokens (keeping {pooled})"
        return line

    def towers(self, model):
        return {"the image tower": model.vision_model, "the text tower": model.text_model}

    def refusal(self, model, masksub_type):
        if masksub_type == "mask" and self.masks_text(model):
            if text_pooling(model.text_model) is None:
                return (f"mask_text needs to know which token the text tower ({type(model.text_model).__name__}) pools; "
                        "known: CLIP text (EOS), SigLIP text (last), BERT-like encoders ([CLS]). Unset mask_text")
            if not accepts(model, "position_ids"):
                return f"mask_text passes the kept tokens' positions, and {type(model).__name__}.forward takes no position_ids"
        return super().refusal(model, masksub_type)

    # ---- mask ------------------------------------------------------------------------------
    @contextmanager
    def mask(self, model, inputs, ratio):
        if not 0 <= ratio < 1:
            raise ValueError(f"--masksub_ratio {ratio} leaves no token; use a ratio in [0, 1).")
        with ExitStack() as stack:
            inputs = stack.enter_context(self._mask_image(model, inputs, ratio))
            if self.masks_text(model):
                inputs = self._drop_text(model, inputs, ratio)
            yield inputs

    @contextmanager
    def _mask_image(self, model, inputs, ratio):
        emb = vision_token_embeddings(model.vision_model)
        if emb is None:  # no tokens to drop: zero a ratio of pixel blocks, as for CNN classifiers
            pixels = inputs.get("pixel_values")
            if not isinstance(pixels, torch.Tensor) or pixels.dim() != 4:
                raise ValueError(f"--masksub_type mask: the vision tower {type(model.vision_model).__name__} has no patch "
                                 "tokens and the batch has no (B, C, H, W) pixel_values to block-mask; use drop or path.")
            yield {**inputs, "pixel_values": block_mask(pixels, ratio)}
            return
        prefix = prefix_tokens(emb)
        patch_mask = inputs.get("pixel_attention_mask")  # SigLIP 2 (NaFlex): padded patches are never kept
        index = None
        if patch_mask is not None:
            index, kept = keep_indices(patch_mask.bool(), ratio, num_prefix=0)
            inputs = {**inputs, "pixel_attention_mask": kept.to(patch_mask.dtype)}
        with dropped_output_tokens(emb, ratio, num_prefix=prefix, index=index):
            yield inputs

    def _drop_text(self, model, inputs: Dict, ratio: float) -> SubBatch:
        """Drop `ratio` of each caption's droppable tokens, keep the pooled one, pass the original position_ids."""
        text = model.text_model
        ids = inputs["input_ids"]
        attention = inputs.get("attention_mask")
        real = attention.bool() if attention is not None else torch.ones_like(ids, dtype=torch.bool)
        positions = original_positions(text, ids, inputs.get("position_ids"))  # the caller's own, else the tower's
        columns = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
        pooling = text_pooling(text)
        if pooling == "first":
            index, kept = keep_indices(real, ratio, num_prefix=1)
        elif pooling == "eos":  # causal: tokens after the EOS never reach it; keep <|startoftext|> and the EOS
            eos = eos_positions(text, ids).to(ids.device)[:, None]
            pooled = columns.eq(eos)
            index, kept = keep_indices((real & columns.lt(eos)) | pooled, ratio, always=columns.eq(0) | pooled)
        else:  # 'last': every row keeps as many tokens, so the pooled one stays last (SigLIP attends its padding)
            pooled = columns.eq(ids.shape[1] - 1)
            index, kept = keep_indices(torch.ones_like(real), ratio, always=pooled)
        pad = getattr(text.config, "pad_token_id", None) or 0
        overrides = {"position_ids": gather_tokens(positions, index)}
        if attention is not None:  # padding the caption had stays padding ('last' may keep some)
            overrides["attention_mask"] = (gather_tokens(real.long(), index) * kept).to(attention.dtype)
        text_inputs = {k: inputs[k] for k in ("input_ids", "attention_mask", "token_type_ids") if inputs.get(k) is not None}
        sub = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask", "position_ids", "token_type_ids")}
        sub.update(shorter_batch(text_inputs, index, kept, pad, overrides))
        if attention is None and kept.all():  # nothing to mask: leave the tower its own default
            del sub["attention_mask"]
        return SubBatch(sub, index, kept)
