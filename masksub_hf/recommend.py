"""`--masksub_type auto`: the sub-branch setting the project's own benchmark measured best, per domain.

A domain is the model's kind and its head (classification, multi-label, regression, contrastive), read as
the relaxed loss would be. The kind is the family's modality (text, image, image-text), and for an image
tower how `mask` reaches it: ViT-style (patch tokens dropped, the sub-branch shorter) or CNN-style (masked
in place at full cost: CNNs, Swin, BEiT), since the benchmark's gains were measured on the first only.
Each row is ranked: auto takes the first choice the model can take (a model with no family for `mask`
falls to the next), then the paper's defaults; a row measured to its end (text) ranks its own arms, so
the fallback is evidence too. The evidence
is bench/quality.py's paired comparison with the baseline (5 seeds, 95% CI), written out in
docs/RESULTS.md; `established` says whether its interval excludes zero. This table is the one source:
the README's table, `python -m masksub_hf.plan` and the trainer's log line are printed from it.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from torch import nn

from .losses import resolve_loss_name

RESULTS = "docs/RESULTS.md, 'Which type for which model'"
HEADS = {"softmax": "classification", "sigmoid": "multi-label", "mse": "regression", "huber": "regression",
         "clip": "contrastive", "siglip": "contrastive"}


@dataclass(frozen=True)
class Choice:
    masksub_type: str
    ratio: float
    evidence: str
    established: bool = False  # the benchmark's interval excludes zero in the gain's favour
    loss: str = "auto"  # the relaxed loss, where the benchmark found one better than the head's default
    measured: Optional[Tuple[str, str]] = None  # (preset, arm) of bench/results whose paired headline the evidence quotes

    def short(self) -> str:
        return "none" if self.masksub_type == "none" else f"{self.masksub_type} {self.ratio:g}"

    def flags(self) -> str:
        if self.masksub_type == "none":
            return "--masksub_type none"
        loss = "" if self.loss == "auto" else f" --masksub_loss {self.loss}"
        return f"--masksub_type {self.masksub_type} --masksub_ratio {self.ratio:g}{loss}"


# The paper's defaults, for domains the benchmark never measured: its main method first.
UNMEASURED = [Choice("mask", 0.5, "not measured here: the paper's default"),
              Choice("drop", 0.5, "not measured here: the paper's DropSub default"),
              Choice("path", 0.5, "not measured here: the paper's PathSub default")]

IMAGE_VIT = [Choice("mask", 0.5, "image-long (ViT from scratch, at the baseline's tuned rate): +0.87 [+0.10, +1.64] test "
                                 "accuracy points, 5/5 seeds; at 8x that rate (image-long-2e-3), where the baseline "
                                 "overfits more, +1.67 [+1.11, +2.24], 5/5", established=True,
                     measured=("image-long", "masksub"))]
# Pretrained CNN (image-pretrained-long, 5 seeds): every arm level, ranked by its mean paired gain.
IMAGE_CNN = [Choice("path", 0.1, "image-pretrained-long (ImageNet EfficientNet-Lite0 through timm, fine-tuned): path 0.1 "
                                 "+0.60 [-0.45, +1.65] test accuracy points, 4/5 seeds; drop 0.1 +0.50 [-0.57, +1.57], "
                                 "3/5; mask 0.5 (pixel blocks) +0.03 [-1.27, +1.33], 2/5",
                    measured=("image-pretrained-long", "pathsub-p0.1")),
             Choice("drop", 0.1, "image-pretrained-long: drop 0.1 +0.50 [-0.57, +1.57] test accuracy points, 3/5 seeds, "
                                 "the best measured after path 0.1", measured=("image-pretrained-long", "dropsub-p0.1")),
             Choice("mask", 0.5, "image-pretrained-long: mask 0.5 (pixel blocks) +0.03 [-1.27, +1.33] test accuracy "
                                 "points, 2/5 seeds; clip-classify-cnn (the same CNN as a CLIP tower): -0.18 [-1.09, "
                                 "+0.73], 3/5", measured=("image-pretrained-long", "masksub"))]
# Pretrained text: no arm is established on accuracy; the best measured over 5 seeds is DropSub at 0.3.
TEXT = [Choice("drop", 0.3, "text-long: drop 0.3 +0.23 [-0.19, +0.65] test accuracy points, 4/5 seeds (final validation "
                            "loss -0.094, 5/5); drop 0.1 +0.04 [-0.61, +0.69]; path 0.1 -0.10 [-1.29, +1.08]; path 0.3 "
                            "-0.25 [-0.94, +0.44]; mask 0.15 -0.48 [-1.14, +0.18]; mask 0.25 -0.27 [-1.08, +0.54]; mask "
                            "0.5 -0.69 [-1.48, +0.11] (5 seeds each); 4x the text (text-large): drop 0.3 +0.17 [-0.99, +1.32], "
                            "3/5, mask 0.5 -0.13 [-1.00, +0.75], 1/5; sentence pairs (pair-long): drop 0.3 -0.35 "
                            "[-1.59, +0.88], 2/5, mask 0.5 worse (-1.19 [-2.25, -0.13], 0/5)",
                measured=("text-long", "dropsub-p0.3")),
        Choice("path", 0.1, "text-long: path 0.1 -0.10 [-1.29, +1.08] test accuracy points, 2/5 seeds, the best measured "
                            "after drop 0.3", measured=("text-long", "pathsub-p0.1")),
        Choice("mask", 0.25, "text-long: mask 0.25 -0.27 [-1.08, +0.54] test accuracy points, 1/5 seeds, the best "
                             "measured ratio of mask (0.5 is worse on sentence pairs: pair-long)",
               measured=("text-long", "masksub-r0.25"))]
TEXT_REGRESSION = [Choice("drop", 0.1, "score-long (lr 2e-4): drop 0.1 +0.0087 [-0.0088, +0.0261] test Pearson, 3/5 seeds; "
                                       "path 0.1 level (-0.0049, 1/5); mask 0.5 worse on every seed, with the squared "
                                       "error (-0.0422 [-0.0525, -0.0318], 0/5) and with smooth-L1 (-0.0192 [-0.0349, "
                                       "-0.0035], 0/5)", measured=("score-long", "dropsub-p0.1")),
                   Choice("path", 0.1, "score-long: path 0.1 -0.0049 [-0.0158, +0.0059] test Pearson, 1/5 seeds, level",
                          measured=("score-long", "pathsub-p0.1")),
                   Choice("none", 0.0, "score-long: mask, the one type left, is worse on every seed (-0.0422 [-0.0525, "
                                       "-0.0318], 0/5 seeds): plain Trainer rather than a type measured to lose",
                          measured=("score-long", "masksub"))]
CLIP_CONTRASTIVE_VIT = [Choice("mask", 0.5, "clip-contrastive-vit-long (ViT image tower from scratch, 1,000 steps): +7.32 "
                                            "[-3.21, +17.85] zero-shot accuracy points, 5/5 seeds (the baseline stalled "
                                            "on seed 4, 56.6; the other four gain +1.5 to +5.0); at 300 steps "
                                            "(clip-contrastive-vit) +1.26 [-0.39, +2.91], 4/5",
                                            measured=("clip-contrastive-vit-long", "masksub"))]
# Pretrained CNN tower, contrastive (clip-contrastive-cnn, 5 seeds): every arm level, ranked by its mean paired gain.
CLIP_CONTRASTIVE_CNN = [Choice("drop", 0.1, "clip-contrastive-cnn (pretrained EfficientNet-Lite0 + MiniLM towers, tuned 8e-4): "
                                            "drop 0.1 +0.04 [-0.67, +0.75] zero-shot accuracy points, 2/5 seeds (image->text "
                                            "R@1 +0.74, 4/5); path 0.1 -0.28 [-0.90, +0.34], 1/5; mask 0.5 (pixel blocks) "
                                            "-1.30 [-2.71, +0.11], 1/5",
                                measured=("clip-contrastive-cnn", "dropsub-p0.1")),
                        Choice("path", 0.1, "clip-contrastive-cnn: path 0.1 -0.28 [-0.90, +0.34] zero-shot accuracy points, "
                                            "1/5 seeds, the best measured after drop 0.1",
                               measured=("clip-contrastive-cnn", "pathsub-p0.1")),
                        Choice("mask", 0.5, "clip-contrastive-cnn: mask 0.5 (pixel blocks) -1.30 [-2.71, +0.11] zero-shot "
                                            "accuracy points, 1/5 seeds, level", measured=("clip-contrastive-cnn", "masksub"))]
CLIP_CLASSIFY_VIT = [Choice("mask", 0.5, "clip-classify-vit-long (ViT image tower from scratch, 1,000 steps): +2.04 "
                                         "[+0.28, +3.80] test accuracy points, 5/5 seeds (at 300 steps, clip-classify-vit, "
                                         "where the tower is still rising: +1.28 [-0.31, +2.87], 4/5)",
                            established=True, measured=("clip-classify-vit-long", "masksub"))]
# Pretrained CNN tower as a classifier (clip-classify-cnn, 5 seeds): every arm level, ranked by its mean paired gain.
CLIP_CLASSIFY_CNN = [Choice("drop", 0.1, "clip-classify-cnn (pretrained EfficientNet-Lite0 tower, tuned 1.6e-3): drop 0.1 "
                                         "+0.52 [-1.40, +2.44] test accuracy points, 3/5 seeds; path 0.1 +0.34 [-0.91, "
                                         "+1.59], 3/5; mask 0.5 (pixel blocks) -0.18 [-1.09, +0.73], 3/5",
                            measured=("clip-classify-cnn", "dropsub-p0.1")),
                     Choice("path", 0.1, "clip-classify-cnn: path 0.1 +0.34 [-0.91, +1.59] test accuracy points, 3/5 "
                                         "seeds, the best measured after drop 0.1", measured=("clip-classify-cnn", "pathsub-p0.1")),
                     Choice("mask", 0.5, "clip-classify-cnn: mask 0.5 (pixel blocks) -0.18 [-1.09, +0.73] test accuracy "
                                         "points, 3/5 seeds, level", measured=("clip-classify-cnn", "masksub"))]


def unmeasured_like(ranked: List[Choice], row: str) -> List[Choice]:
    """A head the benchmark never trained: the choices of its nearest measured row, marked as not measured."""
    return [Choice(c.masksub_type, c.ratio, f"not measured here; as for {row}", loss=c.loss) for c in ranked]


CHOICES: Dict[Tuple[str, str], List[Choice]] = {
    ("ViT-style image", "classification"): IMAGE_VIT,
    ("ViT-style image", "multi-label"): unmeasured_like(IMAGE_VIT, "ViT-style image classification"),
    ("CNN-style image", "classification"): IMAGE_CNN,
    ("CNN-style image", "multi-label"): unmeasured_like(IMAGE_CNN, "CNN-style image classification"),
    ("text", "classification"): TEXT,
    ("text", "multi-label"): unmeasured_like(TEXT, "text classification"),
    ("text", "regression"): TEXT_REGRESSION,
    ("ViT-style image-text", "contrastive"): CLIP_CONTRASTIVE_VIT,
    ("CNN-style image-text", "contrastive"): CLIP_CONTRASTIVE_CNN,
    ("ViT-style image-text", "classification"): CLIP_CLASSIFY_VIT,
    ("CNN-style image-text", "classification"): CLIP_CLASSIFY_CNN,
}


def domain(family, model: nn.Module, loss: str = "auto") -> Tuple[str, str]:
    """(kind, head) of the model: which row of CHOICES applies."""
    head = HEADS.get(resolve_loss_name(model, loss, family.loss_name(model)), "classification")
    kind = family.modality or "other"
    if kind.startswith("image"):
        kind = f"{'ViT' if family.drops_tokens(model) else 'CNN'}-style {kind}"
    return (kind, head)


def choose(family, model: nn.Module, loss: str = "auto") -> Tuple[Tuple[str, str], Choice, List[str]]:
    """The domain, the first choice of its row (else the paper's defaults) that the model can take, and why each
    earlier choice did not fit."""
    where, passed = domain(family, model, loss), []
    for choice in CHOICES.get(where, []) + UNMEASURED:
        reason = None if choice.masksub_type == "none" else family.refusal(model, choice.masksub_type)
        if reason is None:
            return where, choice, passed
        if choice.masksub_type not in [p.split(" ")[0] for p in passed]:
            passed.append(f"{choice.masksub_type} does not fit this model ({reason})")
    raise ValueError(f"--masksub_type auto: no sub-branch type fits this {type(model).__name__} ({family.name}); "
                     "give --masksub_type none, or teach masksub_hf the model with register_family.")


def explain(where: Tuple[str, str], choice: Choice, passed: List[str] = (), ratio: Optional[float] = None) -> str:
    """The one line auto logs and `python -m masksub_hf.plan` prints."""
    if choice.masksub_type == "none":
        picked = "none (plain Trainer, no sub-branch)"
    else:
        picked = f"{choice.masksub_type} at {choice.ratio:g}" + ("" if choice.loss == "auto" else f", loss {choice.loss}")
        if ratio is not None and ratio != choice.ratio:
            picked = f"{choice.masksub_type} at {ratio:g} (your --masksub_ratio; auto's is {choice.ratio:g})"
    verdict = "a gain established" if choice.established else "no gain established in this domain"
    fell = "".join(f" ({p})" for p in passed)
    article = "an" if where[0][:1] in "aeiou" else "a"
    return (f"masksub_type auto: {where[1]} on {article} {where[0]} model -> {picked}{fell}; {verdict}: {choice.evidence} "
            f"({RESULTS})")


def readme_table() -> str:
    """The README's `auto` table, from CHOICES."""
    rows = ["| model | head | `auto` picks | gain established? | evidence (bench/quality.py, paired by seed, 95% CI) |",
            "|---|---|---|---|---|"]
    for (modality, head), ranked in CHOICES.items():
        c, fallbacks = ranked[0], [r.short() for r in ranked[1:]]
        rest = f" (else {', else '.join(fallbacks)})" if fallbacks else ""
        rows.append(f"| {modality} | {head} | `{c.flags()}`{rest} | {'yes' if c.established else 'no'} | {c.evidence} |")
    rows.append(f"| any other | any | `{UNMEASURED[0].flags()}` (else drop, else path, at 0.5) | no | "
                f"{UNMEASURED[0].evidence} |")
    return "\n".join(rows)
