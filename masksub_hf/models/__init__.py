"""Per-family knowledge: where tokens enter, which modules are residual blocks.

The registry is tried in this order, most specific first; GenericFamily (drop and path for any
model) answers when none matches. `register_family` puts a user's family before all of these.
"""
from .base import FAMILIES, Family, GenericFamily, SubBatch, base_model_of, find_family, register_family
from .hf_clip import ImageTextFamily
from .hf_image import PixelFamily
from .hf_mask_token import MaskTokenFamily
from .hf_text import DecoderTextFamily, MaskTokenTextFamily, TextEncoderFamily
from .hf_vit import ViTFamily
from .open_clip import OpenCLIPFamily
from .peft_wrappers import PromptLearningFamily
from .timm import TimmFamily

for _family in (
    ImageTextFamily(),  # transformers' CLIP, SigLIP, dual encoders (vision_model + text_model)
    OpenCLIPFamily(),  # open_clip models through OpenCLIPForMaskSub
    PromptLearningFamily(),  # PEFT prompt/prefix tuning: virtual tokens, so no token dropping
    MaskTokenFamily(),  # BEiT/Data2Vec with relative bias, Swin...: the model's own mask token
    TextEncoderFamily(),
    ViTFamily(),
    TimmFamily(),
    PixelFamily(),
    DecoderTextFamily(),
    MaskTokenTextFamily(),  # any other text model: mask token in place
):
    register_family(_family, first=False)

__all__ = ["FAMILIES", "Family", "GenericFamily", "SubBatch", "base_model_of", "find_family", "register_family"]
