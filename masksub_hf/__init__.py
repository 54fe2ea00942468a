"""MaskSub for Hugging Face: a drop-in transformers.Trainer with a supervised sub-branch."""
from .config import MASKSUB_TYPES, MaskSubConfig
from .losses import RELAXED_LOSSES
from .models import Family, SubBatch, find_family, register_family
from .trainer import MaskSubMixin, MaskSubTrainer

__version__ = "0.1.0"
__all__ = ["MaskSubConfig", "MaskSubMixin", "MaskSubTrainer", "MASKSUB_TYPES", "RELAXED_LOSSES", "Family", "SubBatch", "find_family", "register_family"]
