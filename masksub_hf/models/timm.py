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

from ..perturb import PIXEL_BLOCKS, block_mask
from ..perturb.audit import INPUT_MASKED, noting_calls
from ..perturb.hooks import attributes_set
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
    priority = 70
    masked_kind = PIXEL_BLOCKS  # no patch-dropout slot (CNNs, Swin)
    name = "timm models via TimmWrapperForImageClassification (ViTs drop tokens, CNNs mask 32x32 blocks)"
    modality = "image"
    mask_doc = "ViTs: timm's PatchDropout drops patch tokens, prefix tokens kept; CNNs: zeroes pixel blocks"

    def matches(self, model):
        return hasattr(model, "timm_model")

    def drops_tokens(self, model):
        return _patch_dropout_class(model.timm_model) is not None

    @contextmanager
    def mask(self, model, inputs, ratio):
        net = model.timm_model
        dropout = _patch_dropout_class(net)
        if dropout is None:
            yield {**inputs, "pixel_values": block_mask(inputs["pixel_values"], ratio)}
            return
        swapped = dropout(ratio, num_prefix_tokens=getattr(net, "num_prefix_tokens", 1))
        with attributes_set([(net, "patch_drop", swapped)]), noting_calls([swapped], INPUT_MASKED):
            yield inputs
