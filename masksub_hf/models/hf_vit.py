"""HF ViT-style image classifiers whose patches can be dropped: ViT, DeiT, DINOv2 (with or without
registers), and BEiT / Data2Vec-vision built without relative position bias.

The patches are dropped after the position embedding (a forward hook on the embeddings), so each
kept patch keeps its position; the leading tokens (CLS, DeiT's distillation token, DINOv2's
registers) are always kept. Models with a relative position bias compute a bias for the full token
grid in every layer, so they cannot take fewer tokens: `hf_mask_token.MaskTokenFamily` takes them.
"""
from contextlib import contextmanager

import torch

from ..perturb import dropped_output_tokens
from .base import Family, embeddings_of


def has_relative_position_bias(model) -> bool:
    """A relative position bias table anywhere (BEiT, Data2Vec-vision, Swin): attention expects every token."""
    return any("relative_position_bias" in name for name, _ in model.named_parameters())


def prefix_tokens(emb) -> int:
    """How many leading tokens the vision embeddings put before the patches: CLS (none in SigLIP), a distillation
    token (DeiT), register tokens (DINOv2 with registers); these are never dropped."""
    count = int(any(getattr(emb, n, None) is not None for n in ("class_embedding", "cls_token")))
    count += int(getattr(emb, "distillation_token", None) is not None)
    registers = getattr(emb, "register_tokens", None)
    return count + (registers.shape[1] if torch.is_tensor(registers) else 0)


class ViTFamily(Family):
    priority = 60
    name = "HF ViT image classifiers (ViT, DeiT, DINOv2 with or without registers)"
    modality = "image"
    mask_doc = ("drops patch tokens after the position embedding; CLS, DeiT's distillation token and DINOv2's "
                "registers kept")

    def matches(self, model):
        emb = embeddings_of(model)
        return (emb is not None and torch.is_tensor(getattr(emb, "cls_token", None))
                and hasattr(emb, "patch_embeddings") and not has_relative_position_bias(model))

    def drops_tokens(self, model):
        return True

    def describe(self, model, masksub_type, ratio=0.5):
        line = super().describe(model, masksub_type, ratio)
        if masksub_type == "mask":
            kept = prefix_tokens(embeddings_of(model))
            first = "the first token (CLS) is" if kept == 1 else f"the first {kept} tokens (CLS/distillation/registers) are"
            line += f" (patches only: {first} kept)"
        return line

    @contextmanager
    def mask(self, model, inputs, ratio):
        emb = embeddings_of(model)
        with dropped_output_tokens(emb, ratio, num_prefix=prefix_tokens(emb)):
            yield inputs
