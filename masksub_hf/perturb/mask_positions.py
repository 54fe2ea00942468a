"""Mask-token masking: which patch positions the model's own mask token replaces."""
import torch

from .pixel_blocks import block_mask


def masked_positions(batch: int, grid, ratio: float, block: int = 1, device=None) -> torch.Tensor:
    """(batch, gh * gw) bool, True where a patch is masked, in the row-major order of the patch grid.

    `ratio` of the block x block cells of the (gh, gw) patch grid are masked per sample, with the
    semantics of `block_mask` (same random draw, partial cells at the edges count): block=1 masks
    single patches (the ViT recipe), larger blocks the paper's 32 x 32-pixel blocks (Swin).
    """
    gh, gw = grid
    ones = torch.ones(batch, 1, gh, gw, device=device)
    return block_mask(ones, ratio, block=block)[:, 0].flatten(1) == 0
