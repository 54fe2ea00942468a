"""Block masking for models that cannot drop tokens (CNNs, hierarchical ViTs): zero square pixel blocks."""
import math

import torch

from . import tokens
from .audit import INPUT_MASKED, note


def block_mask(pixel_values: torch.Tensor, ratio: float, block: int = None) -> torch.Tensor:
    """Zero `ratio` of the block x block cells of each image (partial cells at the edges count).

    The paper zeroes 32 px blocks of 224 px images, a 7 x 7 grid; by default smaller images keep
    that grid (28 px images get 4 px blocks) instead of becoming a single block that is never dropped.
    """
    b, _, h, w = pixel_values.shape
    block = block or max(1, min(32, math.ceil(min(h, w) / 7)))
    gh, gw = math.ceil(h / block), math.ceil(w / block)
    n_drop = int(gh * gw * ratio)
    scores = tokens.random_scores((b, gh * gw), pixel_values.device)
    drop = torch.zeros(b, gh * gw, dtype=torch.bool, device=pixel_values.device)
    drop.scatter_(1, scores.argsort(dim=1)[:, :n_drop], True)
    note(INPUT_MASKED)
    keep = (~drop).view(b, 1, gh, gw).repeat_interleave(block, 2).repeat_interleave(block, 3)[..., :h, :w]
    return pixel_values * keep.to(pixel_values.dtype)
