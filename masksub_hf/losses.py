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


def huber(sub_pred: torch.Tensor, main_pred: torch.Tensor) -> torch.Tensor:
    """Regression, robust: smooth-L1 (beta 1) to the detached main prediction. Half the squared error for
    differences under 1, linear beyond, so a badly perturbed sub prediction cannot outweigh the main loss."""
    sub, main = _fp32(sub_pred, main_pred)
    with torch.autocast(sub.device.type, enabled=False):
        return F.smooth_l1_loss(sub, main, beta=1.0)


def contrastive_soft_cross_entropy(sub_logits: torch.Tensor, main_logits: torch.Tensor) -> torch.Tensor:
    """CLIP: soft cross-entropy over the image->text rows and the text->image rows, averaged.

    Both arguments are image x text similarity matrices (already scaled by logit_scale).
    """
    return (soft_cross_entropy(sub_logits, main_logits) + soft_cross_entropy(sub_logits.t(), main_logits.t())) / 2


def pairwise_sigmoid_bce(sub_logits: torch.Tensor, main_logits: torch.Tensor) -> torch.Tensor:
    """SigLIP: every image-text pair is its own binary problem; BCE of each sub logit against sigmoid(main logit),
    summed over the texts and averaged over the images.

    That is SiglipModel's own normalisation (its loss sums the pairwise log-likelihoods over one axis and averages
    over the other), so the two branches weigh alike; `sigmoid` (a mean over all B x B entries) would make the
    sub-branch B times weaker than the main one.
    """
    sub, main = _fp32(sub_logits, main_logits)
    with torch.autocast(sub.device.type, enabled=False):
        return F.binary_cross_entropy_with_logits(sub, main.sigmoid(), reduction="none").sum(-1).mean()


RELAXED_LOSSES: Dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "softmax": soft_cross_entropy,
    "sigmoid": sigmoid_bce,
    "mse": squared_error,
    "huber": huber,
    "clip": contrastive_soft_cross_entropy,
    "siglip": pairwise_sigmoid_bce,
}


def resolve_loss_name(model, requested: str = "auto", own: str = None) -> str:
    """Pick the relaxed loss that fits the model's task, as the HF heads pick their own loss.

    `own`: what the model's family requires (CLIP: 'clip', SigLIP: 'siglip'); otherwise the model may say so itself."""
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
