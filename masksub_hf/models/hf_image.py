"""Any other HF image classifier (ConvNeXt, ResNet, RegNet, MobileViT...): block masking of the
pixels, as the paper does for CNNs, and PathSub through the model's residual structure.

`path` uses the model's own drop-path slots where it has them (ConvNeXt). Otherwise it needs a
residual layout it can name, because the longest ModuleList of a CNN is a list of stages whose
outputs change shape or are not residual, and hooking it would perturb nothing (or the wrong thing):
- ResNet-style blocks (HF ResNet, RegNet: `act(layer(x) + shortcut(x))`): the residual branch
  `layer` is dropped per sample, in every block including the downsampling ones, as timm's ResNets do;
- MobileViT: the inverted-residual blocks that add their input, and the transformer layers, whose
  batch dimension holds patch_area rows per image (one draw per image).
A pixel model with neither is refused `path` at construction.
"""
from contextlib import ExitStack, contextmanager

from torch import nn

from ..perturb import PIXEL_BLOCKS, block_mask, drop_path, drop_path_slots, own_drop_path
from .base import Family


def residual_layouts(model):
    """[(modules, branch, rows_per_sample)]: the residual structure PathSub can perturb without drop-path slots."""
    branches = [m.layer for m in model.modules()
                if _is_module(getattr(m, "shortcut", None)) and _is_module(getattr(m, "layer", None))]
    layouts = [(branches, True, 1)] if branches else []
    inverted = [m for m in model.modules() if getattr(m, "use_residual", None) is True]
    if inverted:
        layouts.append((inverted, False, 1))
    for m in model.modules():
        if type(m).__name__ == "MobileViTLayer":  # transformer rows: (batch * patch_area, patches, channels)
            layouts.append((list(m.transformer.layer), False, m.patch_width * m.patch_height))
    return layouts


def _is_module(value):
    return isinstance(value, nn.Module)


class PixelFamily(Family):
    priority = 80  # any pixel_values model the families above did not take
    name = "other HF image classifiers (32x32 pixel-block masking)"
    modality = "image"
    mask_doc = "zeroes the ratio of a 7x7 grid of pixel blocks (32 px at 224 px)"
    path_doc = ("the model's own drop-path slots at p, else ResNet-style residual branches and MobileViT's residual "
                "blocks; refused where neither exists")

    def matches(self, model):  # an image-to-text model (VisionEncoderDecoder) is no image classifier
        return (getattr(model, "main_input_name", None) == "pixel_values"
                and not getattr(getattr(model, "config", None), "is_encoder_decoder", False))

    masked_kind = PIXEL_BLOCKS

    @contextmanager
    def mask(self, model, inputs, ratio):
        yield {**inputs, "pixel_values": block_mask(inputs["pixel_values"], ratio)}

    def blocks(self, model):
        return [m for modules, _, _ in residual_layouts(model) for m in modules]

    @contextmanager
    def path(self, model, inputs, ratio):
        if drop_path_slots(model):
            with own_drop_path(model, ratio):
                yield inputs
            return
        with ExitStack() as stack:
            for modules, branch, rows in residual_layouts(model):
                stack.enter_context(drop_path(modules, ratio, branch=branch, rows_per_sample=rows))
            yield inputs

    def refusal(self, model, masksub_type):
        if masksub_type == "path" and not drop_path_slots(model) and not residual_layouts(model):
            return ("it has no drop-path slot, and no residual layout masksub_hf knows (ResNet-style shortcut/layer "
                    "blocks, MobileViT) was found: its stages change shape, so dropping them is not stochastic depth")
        return super().refusal(model, masksub_type)
