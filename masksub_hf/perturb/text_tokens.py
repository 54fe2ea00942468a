"""Text batches for the sub-branch: which tokens must stay, the shorter batch, or masked tokens in place.

Text batches are (B, L), or (B, C, L) for multiple choice (each choice is a sequence of its own).
Everything here works on the rows flattened to (N, L) and gives the results back in the batch's
own leading shape, so a multiple-choice batch has each of its choices masked independently.
"""
from typing import Dict, Iterable, Optional, Tuple

import torch

from . import tokens
from .tokens import gather_tokens

# what an emptied slot of the shorter batch holds, per input name (anything else: 0)
FILL = {"attention_mask": 0, "token_type_ids": 0, "labels": -100}


def token_rows(inputs: Dict) -> Tuple[torch.Size, torch.Tensor, torch.Tensor]:
    """(leading shape, input_ids as (N, L), valid (N, L): True for real tokens per the attention mask)."""
    ids = inputs["input_ids"]
    rows = ids.reshape(-1, ids.shape[-1])
    attention = inputs.get("attention_mask")
    valid = attention.reshape(rows.shape).bool() if attention is not None else torch.ones_like(rows, dtype=torch.bool)
    return ids.shape[:-1], rows, valid


def first_real(valid: torch.Tensor) -> torch.Tensor:
    """(N, L) bool, True at each row's first real token ([CLS] of a right-padded encoder batch)."""
    out = torch.zeros_like(valid)
    out[torch.arange(valid.shape[0], device=valid.device), valid.int().argmax(1)] = True
    return out & valid


def last_real(valid: torch.Tensor) -> torch.Tensor:
    """(N, L) bool, True at each row's last real token, with left or right padding."""
    out = torch.zeros_like(valid)
    last = valid.shape[1] - 1 - valid.flip(1).int().argmax(1)
    out[torch.arange(valid.shape[0], device=valid.device), last] = True
    return out & valid


def is_token_input(value, ids: torch.Tensor) -> bool:
    """A per-token input: a tensor shaped like input_ids (attention_mask, token_type_ids, position_ids, labels)."""
    return torch.is_tensor(value) and value.shape == ids.shape


def shorter_batch(inputs: Dict, index: torch.Tensor, kept: torch.Tensor, pad_id: int,
                  overrides: Optional[Dict[str, torch.Tensor]] = None) -> Dict:
    """The batch with only the kept tokens: every per-token input gathered at index (N, K), emptied
    slots filled (input_ids with pad_id, attention_mask with 0, labels with -100), reshaped back to
    the batch's leading shape. `overrides` are (N, K) tensors to use instead of gathering (position_ids)."""
    ids = inputs["input_ids"]
    lead, length = ids.shape[:-1], ids.shape[-1]
    sub = {}
    for name, value in inputs.items():
        if name in (overrides or {}) or not is_token_input(value, ids):
            sub[name] = value
            continue
        fill = pad_id if name == "input_ids" else FILL.get(name, 0)
        sub[name] = gather_tokens(value.reshape(-1, length), index).masked_fill(~kept, fill).reshape(*lead, -1)
    sub["attention_mask"] = kept.long().reshape(*lead, -1)
    for name, value in (overrides or {}).items():
        sub[name] = value.reshape(*lead, -1)
    return sub


def replaced_tokens(valid: torch.Tensor, protect: torch.Tensor, ratio: float) -> torch.Tensor:
    """(N, L) bool: `ratio` of each row's real, unprotected tokens, chosen at random, to be replaced."""
    droppable = valid & ~protect
    n_drop = (droppable.sum(1) * ratio).floor().long()
    scores = tokens.random_scores(valid.shape, valid.device).masked_fill(~droppable, 2.0)
    rank = scores.argsort(1).argsort(1)
    return droppable & (rank < n_drop[:, None])


def special_tokens(rows: torch.Tensor, special_ids: Iterable[int]) -> torch.Tensor:
    """(N, L) bool, True where the token is one of special_ids ([CLS], [SEP], <s>, </s>...)."""
    out = torch.zeros_like(rows, dtype=torch.bool)
    for token in special_ids:
        out |= rows.eq(token)
    return out
