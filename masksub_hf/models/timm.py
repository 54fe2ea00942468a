"""timm models through transformers' TimmWrapperForImageClassification.

ViTs drop patch tokens through timm's own PatchDropout slot (`patch_drop`, after the position
embedding, keeping the prefix tokens: CLS and registers). Two kinds of slot exist: VisionTransformer
holds an Identity or a `PatchDropout` (returns the tokens); EVA and NaFlexViT hold None or a
`PatchDropoutWithIndices` (return the tokens and the kept indices, which they apply to their rotary
position embedding). The matching module is swapped in, as setting `patch_drop_rate` would. Models
without the slot (CNNs, Swin) get 32x32 pixel blocks zeroed.
"""
from contextlib import contextmanager

from torch import nn

from ..perturb import block_mask
from ..perturb.audit import INPUT_MASKED, noting_calls
from .base import Family


def _patch_dropout_class(net):
    """timm's PatchDropout class that fits the model's `patch_drop` slot, or None when it has no slot."""
    if not hasattr(net, "patch_drop"):
        return None
    from timm.layers import PatchDropout, PatchDropoutWithIndices

    slot = net.patch_drop
    if slot is None or isinstance(slot, PatchDropoutWithIndices):
        return PatchDropoutWithIndices
    if isinstance(slot, (nn.Identity, PatchDropout)):
        return PatchDropout
    return None


class TimmFamily(Family):
    name = "timm models via TimmWrapperForImageClassification (ViTs drop tokens, CNNs mask 32x32 blocks)"
    modality = "image"
    mask_doc = "ViTs: timm's PatchDropout drops patch tokens, prefix tokens kept; CNNs: zeroes pixel blocks"

    def matches(self, model):
        return hasattr(model, "timm_model")

    def mask_kind(self, model):
        return "tokens dropped" if _patch_dropout_class(model.timm_model) else "pixel blocks zeroed (a 7x7 grid)"

    @contextmanager
    def mask(self, model, inputs, ratio):
        net = model.timm_model
        dropout = _patch_dropout_class(net)
        if dropout is None:
            yield {**inputs, "pixel_values": block_mask(inputs["pixel_values"], ratio)}
            return
        saved = net.patch_drop
        net.patch_drop = dropout(ratio, num_prefix_tokens=getattr(net, "num_prefix_tokens", 1))
        try:
            with noting_calls([net.patch_drop], INPUT_MASKED):
                yield inputs
        finally:
            net.patch_drop = saved
