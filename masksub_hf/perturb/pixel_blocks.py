"""Block masking for models that cannot drop tokens (CNNs, hierarchical ViTs): zero square pixel blocks."""
import math

import torch

from . import tokens
from .audit import INPUT_MASKED, note


# what `mask` does where tokens cannot be dropped (the plan's wording)
PIXEL_BLOCKS = "pixel blocks zeroed (a 7x7 grid, 32 px at 224 px)"


def block_size(h: int, w: int) -> int:
    """The side of one masked block in pixels: the paper's 32 px blocks of 224 px images, a 7 x 7 grid; smaller
    images keep that grid (28 px images get 4 px blocks) instead of becoming a single block that is never dropped."""
    return max(1, min(32, math.ceil(min(h, w) / 7)))


def block_mask(pixel_values: torch.Tensor, ratio: float, block: int = None) -> torch.Tensor:
    """Zero `ratio` of the block x block cells of each image (partial cells at the edges count); the block is
    `block_size`'s by default."""
    b, _, h, w = pixel_values.shape
    block = block or block_size(h, w)
    gh, gw = math.ceil(h / block), math.ceil(w / block)
    n_drop = int(gh * gw * ratio)
    scores = tokens.random_scores((b, gh * gw), pixel_values.device)
    drop = torch.zeros(b, gh * gw, dtype=torch.bool, device=pixel_values.device)
    drop.scatter_(1, scores.argsort(dim=1)[:, :n_drop], True)
    note(INPUT_MASKED)
    keep = (~drop).view(b, 1, gh, gw).repeat_interleave(block, 2).repeat_interleave(block, 3)[..., :h, :w]
    return pixel_values * keep.to(pixel_values.dtype)
