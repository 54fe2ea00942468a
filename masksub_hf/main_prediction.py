"""The main branch's prediction, taken from the forward its loss already ran.

Asking `compute_loss(return_outputs=True)` for the outputs can cost a second forward in Trainer subclasses
(TRL's SFTTrainer recomputes the logits that its fused LM head never builds). So the trainer calls
`compute_loss` for the loss alone and listens to the model's own forward calls instead: the output that
carries a prediction is the one the loss came from. A fused causal-LM head returns only the log-probability
of each label; its logits are then the LM head applied to the hidden states the same forward produced,
checked against those log-probabilities every step.
"""
from contextlib import ExitStack, contextmanager
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .models import base_model_of
from .perturb.hooks import hooked


class Captured:
    """The model's forward calls in order: ("model", outputs, grad enabled) and ("backbone", outputs, _)."""

    def __init__(self):
        self.events: List[Tuple[str, object, bool]] = []

    def outputs(self):
        return [(i, out, grad) for i, (kind, out, grad) in enumerate(self.events) if kind == "model"]


@contextmanager
def model_calls(model: nn.Module):
    """Record the outputs of `model` (and of its transformers backbone, for a fused LM head) while inside."""
    captured = Captured()
    base = base_model_of(model)
    backbone = getattr(base, "base_model", None) if hasattr(base, "get_output_embeddings") else None
    with ExitStack() as stack:
        stack.enter_context(hooked(model, lambda m, a, out: captured.events.append(("model", out, torch.is_grad_enabled()))))
        if isinstance(backbone, nn.Module) and backbone is not base:
            stack.enter_context(hooked(backbone, lambda m, a, out: captured.events.append(("backbone", out, False))))
        yield captured


def _fused(outputs) -> bool:
    """TRL's fused LM head output: per-label log-probabilities and their mask, no logits."""
    return isinstance(outputs, dict) and outputs.get("log_probs") is not None and outputs.get("label_mask") is not None


def main_prediction(captured: Captured, family, model: nn.Module, inputs, trainer_name: str) -> torch.Tensor:
    """The detached prediction of the forward that `compute_loss` ran for its loss."""
    calls = captured.outputs()
    if not calls:
        raise ValueError(f"{trainer_name}.compute_loss did not call the model (through model(...)), so the "
                         "sub-branch has no main prediction to learn: call the model it is given.")
    found = []
    for index, outputs, grad in calls:
        try:
            found.append((index, family.prediction(outputs), grad))
        except ValueError:
            pass
    if len(found) > 1:  # e.g. a loss forward with gradients and a no-grad forward for metrics: the loss's
        found = [f for f in found if f[2]] or found[-1:]
    if len(found) > 1:
        raise ValueError(f"{trainer_name}.compute_loss called the model {len(found)} times with gradients, so which "
                         "prediction the sub-branch should learn is ambiguous: call the model once per loss, or "
                         "register a family (masksub_hf.register_family) whose prediction() tells them apart.")
    if found:
        return found[0][1].detach()
    index, outputs, _ = calls[-1]
    if _fused(outputs):
        return _logits_of_fused_head(captured, index, outputs, model, inputs)
    return family.prediction(outputs)  # raises the family's own message: no prediction in the output


@torch.no_grad()
def _logits_of_fused_head(captured: Captured, index, fused, model, inputs) -> torch.Tensor:
    """The LM head applied to the backbone states of the fused forward, proven equal to its log-probabilities."""
    states = [out for kind, out, _ in captured.events[:index] if kind == "backbone"]
    labels = inputs.get("labels")
    base = base_model_of(model)
    if not states or labels is None or fused["log_probs"].shape != labels[:, 1:].shape:
        raise ValueError("the model returned per-label log-probabilities (a fused LM head) and MaskSub cannot rebuild "
                         "its logits here (no backbone states, no labels, or pre-shifted labels as under sequence "
                         "parallelism); use a model forward that returns logits.")
    hidden = states[-1]["last_hidden_state"] if isinstance(states[-1], dict) else states[-1][0]
    head = base.get_output_embeddings()
    logits = head(hidden.to(head.weight.dtype))
    mask = fused["label_mask"]
    rebuilt = F.log_softmax(logits[:, :-1].float(), -1).gather(-1, labels[:, 1:].clamp(min=0)[..., None])[..., 0]
    tolerance = 1e-3 if hidden.dtype == torch.float32 else 5e-2
    if not torch.allclose(rebuilt[mask], fused["log_probs"][mask].float(), atol=tolerance, rtol=tolerance):
        raise ValueError(f"the logits MaskSub rebuilt from {type(base).__name__}'s LM head do not give the "
                         "log-probabilities its fused LM head returned (a logit scale, soft-capping or temperature "
                         "it does not know); use a model forward that returns logits.")
    return logits.detach()
