"""Per-family knowledge: where tokens enter, which modules are residual blocks. Most specific first."""
from .base import FAMILIES, Family, GenericFamily, SubBatch, base_model_of, find_family, register_family
from .hf_image import PixelFamily
from .hf_text import TextEncoderFamily
from .hf_vit import ViTFamily
from .timm import TimmFamily

for _family in (TextEncoderFamily(), ViTFamily(), TimmFamily(), PixelFamily()):
    register_family(_family, first=False)
# vision and PEFT: mask-token models (BEiT/Data2Vec-vision with relative bias, Swin...), prompt-learning wrappers
from .hf_mask_token import MaskTokenFamily  # noqa: E402
from .peft_wrappers import PromptLearningFamily  # noqa: E402
for _family in (MaskTokenFamily(), PromptLearningFamily()):
    register_family(_family, first=True)
from . import open_clip as _open_clip  # noqa: F401  (registers the open_clip family first)

__all__ = ["FAMILIES", "Family", "GenericFamily", "SubBatch", "base_model_of", "find_family", "register_family"]
