"""timm models through transformers' TimmWrapperForImageClassification."""
from contextlib import contextmanager

from ..perturb import block_mask
from .base import Family


class TimmFamily(Family):
    name = "timm models via TimmWrapperForImageClassification (ViTs drop tokens, CNNs mask 32x32 blocks)"
    mask_doc = "ViTs: timm's PatchDropout drops patch tokens, prefix tokens kept; CNNs: zeroes pixel blocks"

    def matches(self, model):
        return hasattr(model, "timm_model")

    def mask_kind(self, model):
        return "tokens dropped" if hasattr(model.timm_model, "patch_drop") else "pixel blocks zeroed (a 7x7 grid)"

    @contextmanager
    def mask(self, model, inputs, ratio):
        net = model.timm_model
        if hasattr(net, "patch_drop"):  # timm ViTs: PatchDropout after the position embedding keeps prefix tokens
            from timm.layers import PatchDropout

            saved = net.patch_drop
            net.patch_drop = PatchDropout(ratio, num_prefix_tokens=getattr(net, "num_prefix_tokens", 1))
            try:
                yield inputs
            finally:
                net.patch_drop = saved
        else:
            yield {**inputs, "pixel_values": block_mask(inputs["pixel_values"], ratio)}
