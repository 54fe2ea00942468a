"""open_clip models trained by Trainer: the Trainer-facing wrapper, its loss, the logit_scale clamp, saving.

`OpenCLIPForMaskSub` keeps the open_clip model whole in `.clip` (so open_clip saves and loads
it back) and gives Trainer what it expects: forward(**batch) -> {"loss", "logits"}.
- contrastive: loss = open_clip's ClipLoss, logits = the image x text similarity matrix over
  the *gathered* batch under DDP; the sub-branch matches it with the "clip" relaxed loss.
- classify: image tower + a linear head initialised from class-prompt text embeddings
  (the zero-shot head); the sub-branch uses the softmax relaxed loss.
What MaskSub perturbs in it is models/open_clip.py's family, kept apart as open_clip keeps its
training code apart from its model.
"""
import json
import math
from pathlib import Path
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn
from transformers import TrainerCallback

MODES = ("contrastive", "classify")
MAX_LOGIT_SCALE = math.log(100)


def _clip_loss(rank: int, world_size: int):
    """open_clip's ClipLoss (gathering with grad, so DDP equals one process on the global batch) that
    also keeps the image x text logits it computed, so the wrapper needs no second gather."""
    from open_clip.loss import ClipLoss

    class ClipLossKeepingLogits(ClipLoss):
        def get_logits(self, *args, **kwargs):
            logits_per_image, logits_per_text = super().get_logits(*args, **kwargs)
            self.last_logits = logits_per_image
            return logits_per_image, logits_per_text

    return ClipLossKeepingLogits(local_loss=False, gather_with_grad=True, rank=rank, world_size=world_size)


def _dist():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class OpenCLIPForMaskSub(nn.Module):
    """Trainer-compatible wrapper around an open_clip model; `.clip` is the open_clip model itself."""

    def __init__(self, clip: nn.Module, mode: str = "contrastive", class_embeddings: Optional[torch.Tensor] = None,
                 mask_text: bool = False, model_cfg: Optional[Dict] = None, preprocess_cfg: Optional[Dict] = None):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is unknown; choose one of {', '.join(MODES)}.")
        self.clip = clip
        self.mode = mode
        self.mask_text = mask_text  # read by the family: also drop text tokens in the sub-branch
        self.model_cfg, self.preprocess_cfg = model_cfg, preprocess_cfg
        self.masksub_loss = "clip" if mode == "contrastive" else "softmax"
        self._loss = None
        if mode == "classify":
            if class_embeddings is None:
                raise ValueError("classify mode needs class_embeddings (the text embeddings of the class prompts).")
            n_classes, dim = class_embeddings.shape
            self.head = nn.Linear(dim, n_classes)
            with torch.no_grad():  # the zero-shot classifier: scale * <normalised image, class text>
                self.head.weight.copy_(F.normalize(class_embeddings.float(), dim=-1) * clip.logit_scale.exp())
                self.head.bias.zero_()
            for p in list(clip.text.parameters() if hasattr(clip, "text") else []) + self._builtin_text_params():
                p.requires_grad_(False)  # unused in classify mode; frozen so DDP does not wait for them
            clip.logit_scale.requires_grad_(False)

    def _builtin_text_params(self):
        names = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection")
        params = []
        for n in names:
            obj = getattr(self.clip, n, None)
            if isinstance(obj, nn.Module):
                params += list(obj.parameters())
            elif isinstance(obj, nn.Parameter):
                params.append(obj)
        return params

    def clip_loss(self):
        rank, world = _dist()
        if self._loss is None or (self._loss.rank, self._loss.world_size) != (rank, world):
            self._loss = _clip_loss(rank, world)
        return self._loss

    def forward(self, pixel_values, input_ids=None, labels=None):
        image = self.clip.encode_image(pixel_values, normalize=True)
        if self.mode == "classify":
            logits = self.head(image)
            loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
            return {"loss": loss, "logits": logits}
        if input_ids is None:
            raise ValueError("contrastive mode needs input_ids (the tokenised captions) beside pixel_values.")
        text = self.clip.encode_text(input_ids, normalize=True)
        loss_fn = self.clip_loss()
        loss = loss_fn(image, text, self.clip.logit_scale.exp())
        return {"loss": loss, "logits": loss_fn.last_logits}

    def save_open_clip(self, directory) -> Path:
        """Write `open_clip_config.json` + `open_clip_model.safetensors`: `open_clip.create_model('local-dir:' + dir)`
        loads it back."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.model_cfg is None:
            raise ValueError("save_open_clip needs the model_cfg the model was built from.")
        config = {"model_cfg": self.model_cfg, "preprocess_cfg": self.preprocess_cfg or {}}
        (directory / "open_clip_config.json").write_text(json.dumps(config, indent=2))
        state = {k: v.detach().contiguous() for k, v in self.clip.state_dict().items()}
        save_file(state, str(directory / "open_clip_model.safetensors"))
        return directory


class ClampLogitScale(TrainerCallback):
    """open_clip clamps logit_scale to [0, ln 100] after every optimizer step; Trainer has no such hook."""

    def on_step_end(self, args, state, control, model=None, **kwargs):
        net = getattr(model, "module", model)
        clip = getattr(net, "clip", None)
        if clip is not None and hasattr(clip, "logit_scale"):
            with torch.no_grad():
                clip.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
