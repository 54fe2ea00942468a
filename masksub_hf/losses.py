"""Relaxed sub-branch losses: the sub-branch learns the main branch's detached prediction.

Every loss runs in fp32 whatever the autocast dtype, and returns a mean over the batch so the
trainer can scale it for gradient accumulation like any per-batch loss.
"""
from typing import Callable, Dict

import torch
import torch.nn.functional as F


def _fp32(sub: torch.Tensor, main: torch.Tensor):
    if sub.shape != main.shape:
        raise ValueError(f"sub-branch output {tuple(sub.shape)} does not match the main output {tuple(main.shape)}")
    return sub.float(), main.detach().float()


def soft_cross_entropy(sub_logits: torch.Tensor, main_logits: torch.Tensor) -> torch.Tensor:
    """mean_b sum_c -softmax(main)_c log_softmax(sub)_c: the gradient of KL(main || sub), main held fixed."""
    sub, main = _fp32(sub_logits, main_logits)
    with torch.autocast(sub.device.type, enabled=False):
        return -(main.softmax(-1) * sub.log_softmax(-1)).sum(-1).mean()


def sigmoid_bce(sub_logits: torch.Tensor, main_logits: torch.Tensor) -> torch.Tensor:
    """BCE of the sub logits against sigmoid(main): the relaxed loss of sigmoid/BCE recipes."""
    sub, main = _fp32(sub_logits, main_logits)
    with torch.autocast(sub.device.type, enabled=False):
        return F.binary_cross_entropy_with_logits(sub, main.sigmoid())


def squared_error(sub_pred: torch.Tensor, main_pred: torch.Tensor) -> torch.Tensor:
    """Regression has no distribution to match; use the squared error to the detached main prediction."""
    sub, main = _fp32(sub_pred, main_pred)
    with torch.autocast(sub.device.type, enabled=False):
        return F.mse_loss(sub, main)


def contrastive_soft_cross_entropy(sub_logits: torch.Tensor, main_logits: torch.Tensor) -> torch.Tensor:
    """CLIP: soft cross-entropy over the image->text rows and the text->image rows, averaged.

    Both arguments are image x text similarity matrices (already scaled by logit_scale).
    """
    return (soft_cross_entropy(sub_logits, main_logits) + soft_cross_entropy(sub_logits.t(), main_logits.t())) / 2


RELAXED_LOSSES: Dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "softmax": soft_cross_entropy,
    "sigmoid": sigmoid_bce,
    "mse": squared_error,
    "clip": contrastive_soft_cross_entropy,
}


def resolve_loss_name(model, requested: str = "auto", own: str = None) -> str:
    """Pick the relaxed loss that fits the model's task, as the HF heads pick their own loss.

    `own`: what the model's family requires (CLIP: 'clip'); otherwise the model may say so itself."""
    if requested != "auto":
        return requested
    own = own or getattr(model, "masksub_loss", None)
    if own is not None:
        return own
    config = getattr(model, "config", None)
    problem = getattr(config, "problem_type", None)
    if problem == "multi_label_classification":
        return "sigmoid"
    if problem == "regression" or getattr(config, "num_labels", 2) == 1:
        return "mse"
    return "softmax"
