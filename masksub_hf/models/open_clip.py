"""open_clip models under MaskSubTrainer: the family that perturbs OpenCLIPForMaskSub (open_clip_training.py).

mask: ViT towers drop patch tokens through their own patch-dropout slot (CLS kept), CNN towers get pixel
blocks zeroed; with `mask_text`, a Hugging Face text tower drops caption tokens. drop and path: each tower
(`towers`) by the mechanism Family gives it, and each must show the perturbation at run time.
"""
from contextlib import ExitStack, contextmanager

from torch import nn

from ..perturb import PIXEL_BLOCKS, block_mask, drop_tokens, keep_indices
from ..perturb.hooks import attributes_set, hooked
from ..perturb.text_tokens import shorter_batch
from .base import Family
from .open_clip_training import OpenCLIPForMaskSub


class DropTokens(nn.Module):
    """Patch dropout for the sub-branch: keep the class token and a (1 - ratio) share of the patches."""

    def __init__(self, ratio: float, num_prefix: int = 1):
        super().__init__()
        self.ratio, self.num_prefix = ratio, num_prefix

    def forward(self, x):
        kept = drop_tokens(x, self.ratio, self.num_prefix)
        if kept.shape[1] <= self.num_prefix:
            raise ValueError(f"--masksub_ratio {self.ratio} leaves no patch token of {x.shape[1] - self.num_prefix}; "
                             "lower the ratio.")
        return kept


def _is_hf_text(clip):
    return hasattr(getattr(clip, "text", None), "transformer") and hasattr(clip.text, "config")


class OpenCLIPFamily(Family):
    priority = 20
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
                stack.enter_context(attributes_set([(module, name, DropTokens(ratio, prefix))]))
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
        short = shorter_batch({"input_ids": ids}, index, kept, pad)["input_ids"]

        def add_positions(module, args, kwargs):
            return args, {**kwargs, "position_ids": index}

        with hooked(text.transformer, add_positions, pre=True, with_kwargs=True):
            yield {**inputs, "input_ids": short}

    masked_kind = PIXEL_BLOCKS  # a convolutional image tower

    def towers(self, model):
        """The towers the training forward runs: classify mode never calls the text tower (its prompts made the head),
        so drop and path cannot, and need not, reach it there."""
        clip = model.clip
        text = clip.text if getattr(clip, "text", None) is not None else getattr(clip, "transformer", None)
        run_text = text is not None and model.mode == "contrastive"
        return {"the image tower": clip.visual, **({"the text tower": text} if run_text else {})}

    def drops_tokens(self, model):
        return self.token_tower(model) is not None

    def refusal(self, model, masksub_type):
        if model.mask_text and masksub_type == "mask" and not _is_hf_text(model.clip):
            return ("--mask_text needs a Hugging Face text tower (hf_model_name in the model config); "
                    "open_clip's own text transformer pools at the EOT token and is not masked here")
        return super().refusal(model, masksub_type)
