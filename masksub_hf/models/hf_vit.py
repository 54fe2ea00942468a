"""HF ViT-style image classifiers (ViT, DeiT): drop patch tokens after the position embedding."""
from contextlib import contextmanager

import torch

from ..perturb import gather_tokens, keep_indices
from .base import Family


def _embeddings(model):
    return getattr(getattr(model, "base_model", model), "embeddings", None)


class ViTFamily(Family):
    name = "HF ViT image classifiers (ViT, DeiT)"
    mask_doc = "drops patch tokens after the position embedding, CLS (and DeiT's distillation token) kept"

    def matches(self, model):
        emb = _embeddings(model)
        return emb is not None and hasattr(emb, "cls_token") and hasattr(emb, "patch_embeddings")

    def mask_kind(self, model):
        return "tokens dropped"

    @contextmanager
    def mask(self, model, inputs, ratio):
        emb = _embeddings(model)
        num_prefix = 1 + int(getattr(emb, "distillation_token", None) is not None)

        def drop_patches(module, args, output):
            valid = torch.ones(output.shape[:2], dtype=torch.bool, device=output.device)
            index, _ = keep_indices(valid, ratio, num_prefix=num_prefix)  # no padding: every row keeps as many
            return gather_tokens(output, index)

        handle = emb.register_forward_hook(drop_patches)
        try:
            yield inputs
        finally:
            handle.remove()
