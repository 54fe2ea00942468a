"""The three sub-branch perturbations as small building blocks; models/ decides where each applies."""
from .pixel_blocks import block_mask
from .dropout import dropout_rate, dropout_sites
from .droppath import block_drop_path, drop_path_slots, own_drop_path
from .norm_stats import frozen_norm_stats
from .tokens import dropped_output_tokens, gather_tokens, keep_indices, random_scores

__all__ = [
    "block_mask", "dropout_rate", "dropout_sites", "block_drop_path", "drop_path_slots", "own_drop_path",
    "frozen_norm_stats", "dropped_output_tokens", "gather_tokens", "keep_indices", "random_scores",
]
