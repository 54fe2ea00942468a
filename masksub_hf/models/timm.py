"""timm models through transformers' TimmWrapperForImageClassification."""
from contextlib import contextmanager

from ..perturb import block_mask, timm_drop_path
from ..perturb.droppath import timm_drop_path_slots
from .base import Family


class TimmFamily(Family):
    name = "timm models via TimmWrapperForImageClassification (ViTs drop tokens, CNNs mask 32x32 blocks)"

    def matches(self, model):
        return hasattr(model, "timm_model")

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

    @contextmanager
    def path(self, model, inputs, ratio):
        with timm_drop_path(model.timm_model, ratio):
            yield inputs

    def check(self, model, masksub_type):
        if masksub_type == "path" and not timm_drop_path_slots(model.timm_model):
            raise ValueError(f"--masksub_type path: {type(model.timm_model).__name__} has no drop-path slot.")
        elif masksub_type != "path":
            super().check(model, masksub_type)
