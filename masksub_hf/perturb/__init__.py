"""The three sub-branch perturbations as small building blocks; models/ decides where each applies."""
from .blocks import block_mask
from .dropout import dropout_rate, dropout_sites
from .droppath import block_drop_path, timm_drop_path
from .tokens import gather_tokens, keep_indices, random_scores

__all__ = [
    "block_mask", "dropout_rate", "dropout_sites", "block_drop_path", "timm_drop_path",
    "gather_tokens", "keep_indices", "random_scores",
]
