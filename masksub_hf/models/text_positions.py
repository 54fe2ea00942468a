"""How a text model learns where its tokens are, and how the kept tokens keep their original positions.

When the sub-branch drops tokens, the model sees a shorter sequence and would number it afresh.
Each position scheme below is one way a model learns positions; a family asks each whether the
model uses it (`present`) and, for the sub-branch, applies it with the kept tokens' original
columns and position ids (`keep`). A scheme goes through the model's own door where there is one
(the `position_ids` argument; DeBERTa's encoder takes `relative_pos`) and hooks only what has none.
A model that learns positions in a way no scheme knows (ALiBi, T5-style buckets...) is reported
by `unknown_positions`, and its tokens are masked in place instead of dropped.
"""
import sys
from contextlib import ExitStack, contextmanager
from typing import List, Optional

import torch
from torch import nn

from ..perturb.hooks import attributes_set, hooked
from .base import accepts, embeddings_of


def original_positions(model: nn.Module, rows: torch.Tensor, given: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The position ids the model gives the full rows (N, L): the batch's own position_ids when it has
    them; RoBERTa-style embeddings number real tokens from padding_idx + 1 (computed by the model's
    own function); everything else (BERT, ModernBERT, GPT-2, Llama...) counts columns from 0."""
    if given is not None:
        return given.expand(*rows.shape[:-1], given.shape[-1]).reshape(rows.shape)
    emb = embeddings_of(model)
    pad = getattr(emb, "padding_idx", None)
    if isinstance(pad, int) and isinstance(getattr(emb, "position_embeddings", None), nn.Embedding):
        number = getattr(emb, "create_position_ids_from_input_ids", None) or \
            getattr(sys.modules[type(emb).__module__], "create_position_ids_from_input_ids", None)
        if number is not None:
            return number(rows, pad)
    return torch.arange(rows.shape[1], device=rows.device).expand(rows.shape)


class PositionScheme:
    """One way a text model learns positions."""

    name = "positions"

    def present(self, model: nn.Module) -> bool:
        raise NotImplementedError

    def missing(self, model: nn.Module) -> Optional[str]:
        """Why the original positions cannot be given to this model through this scheme (None: they can)."""
        return None

    @contextmanager
    def keep(self, model: nn.Module, overrides: dict, columns: torch.Tensor, positions: torch.Tensor):
        """While inside, the model reads the kept tokens' original positions. columns and positions are
        (N, K): the original column and position id of each kept token; `overrides` collects (N, K)
        per-token inputs for the shorter batch (position_ids)."""
        yield


def _position_table(model: nn.Module) -> Optional[nn.Embedding]:
    """A learned absolute position table: BERT-style embeddings.position_embeddings, GPT-2's wpe.
    Checked to be a real nn.Embedding (DeBERTa-v3 sets position_embeddings to None)."""
    for owner, name in ((embeddings_of(model), "position_embeddings"), (getattr(model, "base_model", model), "wpe")):
        table = getattr(owner, name, None) if owner is not None else None
        if isinstance(table, nn.Embedding):
            return table
    return None


class AbsolutePositions(PositionScheme):
    """A learned table indexed by position id (BERT, RoBERTa, ALBERT, ELECTRA, DistilBERT, XLM-R,
    MPNet, DeBERTa with position_biased_input, GPT-2): the kept tokens' original position ids go in
    through the model's position_ids argument, or through a hook on the table when it has none."""

    name = "absolute position embeddings"

    def present(self, model):
        return _position_table(model) is not None

    @contextmanager
    def keep(self, model, overrides, columns, positions):
        if accepts(model, "position_ids"):
            overrides["position_ids"] = positions
            yield
            return
        with hooked(_position_table(model), lambda module, args: (positions,), pre=True):
            yield


class RotaryPositions(PositionScheme):
    """Rotary embeddings computed from position_ids (ModernBERT, Llama, Qwen2, Mistral, Gemma...)."""

    name = "rotary positions from position_ids"

    def present(self, model):
        return any(type(m).__name__.endswith("RotaryEmbedding") for m in model.modules())

    def missing(self, model):
        if not accepts(model, "position_ids"):
            return f"its rotary embedding reads positions that {type(model).__name__}.forward takes no position_ids for"
        return None

    @contextmanager
    def keep(self, model, overrides, columns, positions):
        overrides["position_ids"] = positions
        yield


def relative_distances(columns: torch.Tensor) -> torch.Tensor:
    """(N, K) original columns -> (N, K, K) query-minus-key distances of the kept tokens."""
    return columns[:, :, None] - columns[:, None, :]


def _deberta_encoder(model):
    for module in model.modules():
        if getattr(module, "relative_attention", None) is True and callable(getattr(module, "get_rel_pos", None)):
            return module
    return None


class DebertaRelativePositions(PositionScheme):
    """DeBERTa-v2/v3 disentangled attention: distances between tokens, from the encoder's
    `relative_pos` argument. The kept tokens get the distances they had in the full sequence,
    bucketed as the model buckets them."""

    name = "DeBERTa relative distances (encoder relative_pos)"

    def present(self, model):
        return _deberta_encoder(model) is not None

    def missing(self, model):
        kind = getattr(model.config, "model_type", None)
        if kind != "deberta-v2":
            return f"its relative attention ({kind}) lays out relative_pos differently from DeBERTa-v2"
        return None

    @staticmethod
    def relative_pos(encoder, columns, heads):
        """relative_pos as the v2 attention reads it per sample. The attention flattens (batch, head)
        into one dimension of size N * heads and gathers with the 4-D relative_pos squeezed at dim 0,
        so per-sample distances go in as (1, N * heads, K, K)."""
        rel = relative_distances(columns)
        buckets, longest = getattr(encoder, "position_buckets", -1), getattr(encoder, "max_relative_positions", -1)
        if buckets > 0 and longest > 0:
            rel = sys.modules[type(encoder).__module__].make_log_bucket_position(rel, buckets, longest)
        rel = rel.long()
        return rel[:, None].expand(-1, heads, -1, -1).reshape(1, -1, *rel.shape[1:])

    @contextmanager
    def keep(self, model, overrides, columns, positions):
        encoder = _deberta_encoder(model)
        rel = self.relative_pos(encoder, columns, model.config.num_attention_heads)

        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            if hidden.shape[0] != columns.shape[0] or hidden.shape[1] != columns.shape[1]:
                raise ValueError(f"DeBERTa relative positions were prepared for {tuple(columns.shape)} tokens, "
                                 f"the encoder got {tuple(hidden.shape[:2])}")
            return args, {**kwargs, "relative_pos": rel}

        with hooked(encoder, hook, pre=True, with_kwargs=True):
            yield


def _mpnet_encoder(model):
    for module in model.modules():
        if (isinstance(getattr(module, "relative_attention_bias", None), nn.Embedding)
                and callable(getattr(module, "compute_position_bias", None))
                and callable(getattr(module, "relative_position_bucket", None))):
            return module
    return None


class RelativeBiasPositions(PositionScheme):
    """MPNet's bucketed relative attention bias, which the encoder computes from the sequence length
    (its compute_position_bias ignores per-sample positions): for the sub-branch it is computed from
    the kept tokens' original distances with the model's own buckets and table."""

    name = "relative attention bias from original distances"

    def present(self, model):
        return _mpnet_encoder(model) is not None

    @contextmanager
    def keep(self, model, overrides, columns, positions):
        encoder = _mpnet_encoder(model)

        def position_bias(x, position_ids=None, num_buckets=32):
            rel = columns[:, None, :] - columns[:, :, None]  # memory minus context, as the encoder does
            bucket = encoder.relative_position_bucket(rel, num_buckets=num_buckets)
            return encoder.relative_attention_bias(bucket).permute(0, 3, 1, 2)  # (N, heads, K, K)

        with attributes_set([(encoder, "compute_position_bias", position_bias)]):  # shadows the method
            yield


SCHEMES: List[PositionScheme] = [AbsolutePositions(), RotaryPositions(), DebertaRelativePositions(),
                                 RelativeBiasPositions()]


def schemes_of(model: nn.Module) -> List[PositionScheme]:
    return [s for s in SCHEMES if s.present(model)]


def unknown_positions(model: nn.Module) -> Optional[str]:
    """Why the kept tokens' original positions cannot be given to this model (None: they can)."""
    config = getattr(model, "config", None)
    kind = str(getattr(config, "position_embedding_type", "") or "")
    if getattr(config, "alibi", False) or "alibi" in kind or getattr(config, "model_type", "") in ("bloom", "mpt"):
        return "it learns positions with ALiBi, computed from the sequence it sees"
    if "relative" in kind:
        return f"its position_embedding_type={kind!r} computes distances from the sequence it sees"
    found = schemes_of(model)
    for scheme in found:
        reason = scheme.missing(model)
        if reason:
            return reason
    if getattr(config, "relative_attention", False) and not any(isinstance(s, DebertaRelativePositions) for s in found):
        return "its relative attention computes distances from the sequence it sees"
    handled = _mpnet_encoder(model)
    for module in model.modules():
        if getattr(module, "relative_attention_bias", None) is not None and module is not handled:
            return f"its {type(module).__name__} computes a relative attention bias from the sequence it sees"
    if not found:
        return "no position embedding, position_ids argument or relative-position input was found"
    return None


@contextmanager
def original_positions_kept(model: nn.Module, columns: torch.Tensor, positions: torch.Tensor):
    """Apply every scheme the model uses; yields the per-token overrides for the shorter batch."""
    overrides = {}
    with ExitStack() as stack:
        for scheme in schemes_of(model):
            stack.enter_context(scheme.keep(model, overrides, columns, positions))
        yield overrides
