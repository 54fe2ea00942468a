"""open_clip models under MaskSubTrainer: a thin Trainer-facing wrapper, its family, the logit_scale clamp.

`OpenCLIPForMaskSub` keeps the open_clip model whole in `.clip` (so open_clip saves and loads
it back) and gives Trainer what it expects: forward(**batch) -> {"loss", "logits"}.
- contrastive: loss = open_clip's ClipLoss, logits = the image x text similarity matrix over
  the *gathered* batch under DDP; the sub-branch matches it with the "clip" relaxed loss.
- classify: image tower + a linear head initialised from class-prompt text embeddings
  (the zero-shot head); the sub-branch uses the softmax relaxed loss.
"""
import json
import math
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn
from transformers import TrainerCallback

from ..perturb import block_drop_path, block_mask, drop_path_slots, gather_tokens, keep_indices, own_drop_path
from ..perturb.audit import INPUT_MASKED, note
from .base import Family, layer_stack

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


class DropTokens(nn.Module):
    """Patch dropout for the sub-branch: keep the class token and a (1 - ratio) share of the patches."""

    def __init__(self, ratio: float, num_prefix: int = 1):
        super().__init__()
        self.ratio, self.num_prefix = ratio, num_prefix

    def forward(self, x):
        valid = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        index, _ = keep_indices(valid, self.ratio, num_prefix=self.num_prefix)
        note(INPUT_MASKED)
        if index.shape[1] <= self.num_prefix:
            raise ValueError(f"--masksub_ratio {self.ratio} leaves no patch token of {x.shape[1] - self.num_prefix}; "
                             "lower the ratio.")
        return gather_tokens(x, index)


@contextmanager
def _swapped(module, name, replacement):
    saved = getattr(module, name)
    setattr(module, name, replacement)
    try:
        yield
    finally:
        setattr(module, name, saved)


def _is_hf_text(clip):
    return hasattr(getattr(clip, "text", None), "transformer") and hasattr(clip.text, "config")


class OpenCLIPFamily(Family):
    name = "open_clip models via OpenCLIPForMaskSub (ViT towers drop patches, CNN towers mask blocks)"
    modality = "image-text"
    mask_doc = "ViT towers drop patch tokens (CLS kept), CNN towers zero pixel blocks; `--mask_text` drops caption tokens"

    def matches(self, model):
        return isinstance(model, OpenCLIPForMaskSub)

    def token_tower(self, model):
        """(module, attribute) of the image tower's patch-dropout slot, or None for a convolutional tower."""
        visual = model.clip.visual
        if hasattr(visual, "patch_dropout"):  # open_clip VisionTransformer
            return visual, "patch_dropout", 1
        trunk = getattr(visual, "trunk", None)
        if trunk is not None and hasattr(trunk, "patch_drop"):  # timm ViT trunk
            return trunk, "patch_drop", getattr(trunk, "num_prefix_tokens", 1)
        return None

    @contextmanager
    def mask(self, model, inputs, ratio):
        if not 0 <= ratio < 1:
            raise ValueError(f"--masksub_ratio {ratio} leaves no token; use a ratio in [0, 1).")
        with ExitStack() as stack:
            slot = self.token_tower(model)
            if slot is not None:
                module, name, prefix = slot
                stack.enter_context(_swapped(module, name, DropTokens(ratio, prefix)))
            else:  # CNNs cannot drop tokens: zero a ratio of a 7 x 7 grid of blocks (32 px at 224, as the paper)
                inputs = {**inputs, "pixel_values": block_mask(inputs["pixel_values"], ratio)}
            if model.mask_text and model.mode == "contrastive":
                inputs = stack.enter_context(self._drop_text(model, inputs, ratio))
            yield inputs

    @contextmanager
    def _drop_text(self, model, inputs, ratio):
        """Drop real caption tokens (never the first), passing the kept tokens' original position ids."""
        text = model.clip.text
        ids = inputs["input_ids"]
        pad = text.config.pad_token_id
        index, kept = keep_indices(ids != pad, ratio, num_prefix=1)
        short = gather_tokens(ids, index).masked_fill(~kept, pad)

        def add_positions(module, args, kwargs):
            return args, {**kwargs, "position_ids": index}

        handle = text.transformer.register_forward_pre_hook(add_positions, with_kwargs=True)
        try:
            yield {**inputs, "input_ids": short}
        finally:
            handle.remove()

    def blocks(self, model):
        clip, found = model.clip, []
        for tower in (getattr(clip.visual, "transformer", None), getattr(clip, "transformer", None)):
            if tower is not None and hasattr(tower, "resblocks"):  # open_clip transformers
                found += list(tower.resblocks)
        if _is_hf_text(clip):
            found += layer_stack(clip.text.transformer)
        elif hasattr(getattr(clip, "text", None), "transformer"):
            found += list(getattr(clip.text.transformer, "resblocks", []))
        return found

    @contextmanager
    def path(self, model, inputs, ratio):
        trunk = getattr(model.clip.visual, "trunk", None)
        with ExitStack() as stack:
            if trunk is not None:
                stack.enter_context(own_drop_path(trunk, ratio))
            stack.enter_context(block_drop_path(self.blocks(model), ratio))
            yield inputs

    def mask_kind(self, model):
        return "tokens dropped" if self.token_tower(model) is not None else "pixel blocks zeroed (a 7x7 grid)"

    def refusal(self, model, masksub_type):
        if model.mask_text and masksub_type == "mask" and not _is_hf_text(model.clip):
            return ("--mask_text needs a Hugging Face text tower (hf_model_name in the model config); "
                    "open_clip's own text transformer pools at the EOT token and is not masked here")
        if masksub_type == "path":
            trunk = getattr(model.clip.visual, "trunk", None)
            if not ((trunk is not None and drop_path_slots(trunk)) or self.blocks(model)):
                return "found no residual blocks in this CLIP"
            return None
        return super().refusal(model, masksub_type)
