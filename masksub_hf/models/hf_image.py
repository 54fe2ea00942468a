"""Any other HF image classifier (ResNet, Swin, ConvNeXt...): block masking of the pixels, as the paper does."""
from contextlib import contextmanager

from ..perturb import block_mask
from .base import Family


class PixelFamily(Family):
    name = "other HF image classifiers (32x32 pixel-block masking)"
    mask_doc = "zeroes the ratio of a 7x7 grid of pixel blocks (32 px at 224 px)"

    def matches(self, model):
        return getattr(model, "main_input_name", None) == "pixel_values"

    def mask_kind(self, model):
        return "pixel blocks zeroed (a 7x7 grid, 32 px at 224 px)"

    @contextmanager
    def mask(self, model, inputs, ratio):
        yield {**inputs, "pixel_values": block_mask(inputs["pixel_values"], ratio)}
