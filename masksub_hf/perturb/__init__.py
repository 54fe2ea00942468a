"""The three sub-branch perturbations as small building blocks; models/ decides where each applies."""
from .pixel_blocks import PIXEL_BLOCKS, block_mask, block_size
from .dropout import dropout_rate, dropout_sites
from .droppath import drop_path, drop_path_slots, own_drop_path
from .norm_stats import frozen_norm_stats
from .tokens import drop_tokens, dropped_output_tokens, gather_tokens, keep_indices, random_scores

__all__ = [
    "PIXEL_BLOCKS", "block_mask", "block_size", "dropout_rate", "dropout_sites", "drop_path", "drop_path_slots", "own_drop_path",
    "frozen_norm_stats", "drop_tokens", "dropped_output_tokens", "gather_tokens", "keep_indices", "random_scores",
]
