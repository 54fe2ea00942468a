"""Per-family knowledge: where tokens enter, which modules are residual blocks. Most specific first."""
from .base import FAMILIES, Family, GenericFamily, SubBatch, base_model_of, find_family, register_family
from .hf_image import PixelFamily
from .hf_text import TextEncoderFamily
from .hf_vit import ViTFamily
from .timm import TimmFamily

for _family in (TextEncoderFamily(), ViTFamily(), TimmFamily(), PixelFamily()):
    register_family(_family, first=False)
# vision: BEiT / Data2Vec-vision with relative position bias and Swin mask through their own mask token
from .hf_mask_token import MaskTokenFamily; register_family(MaskTokenFamily(), first=True)  # noqa: E402,E702
from . import open_clip as _open_clip  # noqa: F401  (registers the open_clip family first)

__all__ = ["FAMILIES", "Family", "GenericFamily", "SubBatch", "base_model_of", "find_family", "register_family"]
