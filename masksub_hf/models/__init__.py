"""Per-family knowledge: where tokens enter, which modules are residual blocks.

The registry tries the families by the `priority` each declares beside its name (most specific first, lower
first), whatever the order below; GenericFamily (drop and path for any model) answers when none matches.
`register_family` puts a user's family before all of these.
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
    DecoderTextFamily(),  # GPT-2, Llama...: token dropping that keeps the pooled last token
    ImageTextFamily(),  # transformers' CLIP, SigLIP, dual encoders (vision_model + text_model)
    MaskTokenFamily(),  # BEiT/Data2Vec with relative bias, Swin...: the model's own mask token
    MaskTokenTextFamily(),  # any other text model: mask token in place
    OpenCLIPFamily(),  # open_clip models through OpenCLIPForMaskSub
    PixelFamily(),  # other pixel_values classifiers: pixel blocks
    PromptLearningFamily(),  # PEFT prompt/prefix tuning: virtual tokens, so no token dropping
    TextEncoderFamily(),  # BERT-like encoders: token dropping that keeps [CLS]
    TimmFamily(),  # timm models through TimmWrapper
    ViTFamily(),  # HF ViT, DeiT, DINOv2: patch dropping
):
    register_family(_family, first=False)  # placed by its priority

__all__ = ["FAMILIES", "Family", "GenericFamily", "SubBatch", "base_model_of", "find_family", "register_family"]
