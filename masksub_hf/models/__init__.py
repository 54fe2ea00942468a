"""Per-family knowledge: where tokens enter, which modules are residual blocks. Most specific first."""
from .base import FAMILIES, Family, GenericFamily, SubBatch, base_model_of, find_family, register_family
from .hf_image import PixelFamily
from .hf_text import DecoderTextFamily, MaskTokenTextFamily, TextEncoderFamily
from .hf_vit import ViTFamily
from .timm import TimmFamily

for _family in (TextEncoderFamily(), ViTFamily(), TimmFamily(), PixelFamily()):
    register_family(_family, first=False)
for _family in (DecoderTextFamily(), MaskTokenTextFamily()):  # text: decoders drop tokens, other text models mask
    register_family(_family, first=False)
from . import open_clip as _open_clip  # noqa: F401  (registers the open_clip family first)

from . import hf_clip as _hf_clip  # noqa: F401,E402  (registers the HF image-text family (CLIP, SigLIP, dual encoders) first)

__all__ = ["FAMILIES", "Family", "GenericFamily", "SubBatch", "base_model_of", "find_family", "register_family"]
