"""HF vision models that cannot drop tokens but carry a mask-token door: their embeddings' `bool_masked_pos`.

BEiT and Data2Vec-vision as released add a relative position bias over the full patch grid in
every layer, and Swin attends within fixed windows, so neither can take fewer tokens. Their
embeddings accept `bool_masked_pos` and replace the masked patches with a learnable mask token;
MaskSub uses that door, as the paper does for Swin:
- BEiT / Data2Vec-vision (one CLS token, ViT-style fine-tuning): random single patches, the ViT
  recipe, `ratio` of the patch positions.
- Swin, Swinv2, FocalNet (windows or focal modulation, no CLS): the paper's 32 x 32-pixel blocks
  (8 x 8 patches of 4 px at 224 px),
  keeping `block_mask`'s 7 x 7 grid on smaller images.
The cost is a full forward (every position is still computed). The mask is handed to the
embeddings' own `bool_masked_pos` argument (a pre-hook), not to the classifier: Data2Vec-vision's
and Swinv2's classifiers accept **kwargs but do not pass them on, so a mask given there is
silently ignored.

Classifiers are usually loaded without the token (BEiT/Data2Vec: `use_mask_token=False`; Swin's
classifier never builds one). Then MaskSubTrainer creates it at construction, zero-initialised as
transformers initialises it, before the optimizer exists so it is trained with the model, and says
so in the log. For BEiT/Data2Vec the config's `use_mask_token` is set, so a saved checkpoint loads
it back. Swin's classifier has no such flag: from_pretrained drops the saved token, so loading a
checkpoint into the model (resume_from_checkpoint, load_best_model_at_end) accepts its absence
and keeps the model's current token; a resumed Swin run restarts the token from zeros. The token
acts in the sub-branch only; predictions never use it.
"""
import logging
import math
from contextlib import contextmanager

import torch
from torch import nn

from ..perturb.mask_positions import masked_positions
from ..perturb.pixel_blocks import block_size
from ..perturb.audit import INPUT_MASKED, note
from ..perturb.hooks import hooked
from .base import Family, accepts, embeddings_of
from .hf_vit import has_relative_position_bias

logger = logging.getLogger(__name__)


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


class MaskTokenFamily(Family):
    priority = 40
    name = "HF vision models with a mask token (BEiT, Data2Vec-vision with relative position bias; Swin, Swinv2, FocalNet)"
    modality = "image"
    mask_doc = ("the model's mask token replaces the ratio of patch positions through bool_masked_pos (BEiT/Data2Vec: "
                "random patches; Swin/Swinv2/FocalNet: 32x32-pixel blocks); created and trained where the classifier "
                "has none")

    def matches(self, model):
        emb = embeddings_of(model)
        if emb is None or not hasattr(emb, "patch_embeddings") or not hasattr(emb, "mask_token"):
            return False
        if not accepts(emb, "bool_masked_pos"):
            return False
        droppable = torch.is_tensor(getattr(emb, "cls_token", None)) and not has_relative_position_bias(model)
        return not droppable  # ViTFamily drops those models' tokens instead (cheaper)

    def windowed(self, model) -> bool:
        """Swin-style models (no CLS token): the paper masks 32 x 32-pixel blocks there."""
        return not torch.is_tensor(getattr(embeddings_of(model), "cls_token", None))

    def mask_kind(self, model):
        what = "32x32-pixel blocks" if self.windowed(model) else "random patches"
        created = "" if embeddings_of(model).mask_token is not None else \
            "; the token is created at construction and trained"
        return f"mask token ({what} replaced through bool_masked_pos{created})"

    def refusal(self, model, masksub_type):
        if masksub_type == "mask":
            patches = embeddings_of(model).patch_embeddings
            if not hasattr(patches, "patch_size"):
                return "its patch embeddings do not say their patch size, so the mask positions cannot be laid out"
            if embeddings_of(model).mask_token is None and not isinstance(getattr(patches, "projection", None), nn.Conv2d):
                return "it has no mask token, and its patch embeddings have no projection to size one by"
        return super().refusal(model, masksub_type)

    # ---- the mask token ------------------------------------------------------------------------
    def check(self, model, masksub_type):
        super().check(model, masksub_type)
        if masksub_type == "mask":
            self.ensure_mask_token(model)

    def ensure_mask_token(self, model) -> nn.Parameter:
        """The model's mask token; created (zeros, trainable) when the classifier was built without one."""
        emb = embeddings_of(model)
        if emb.mask_token is not None:
            return emb.mask_token
        weight = emb.patch_embeddings.projection.weight
        emb.mask_token = nn.Parameter(torch.zeros(1, 1, weight.shape[0], device=weight.device, dtype=weight.dtype))
        # BEiT / Data2Vec: from_pretrained rebuilds the token from the config
        if hasattr(getattr(model, "config", None), "use_mask_token"):
            model.config.use_mask_token = True
        else:  # Swin: the classifier never builds it, so a checkpoint loaded back lacks it
            emb.register_load_state_dict_post_hook(_accept_missing_mask_token)
        logger.warning(
            f"masksub_type mask: {type(model).__name__} was built without a mask token; MaskSub created one "
            f"({tuple(emb.mask_token.shape)}, zeros, trained with the model) to replace the masked patches through "
            "bool_masked_pos, as the paper does for Swin. It only acts in the sub-branch; predictions never use it.")
        return emb.mask_token

    @contextmanager
    def mask(self, model, inputs, ratio):
        emb = embeddings_of(model)
        if emb.mask_token is None:
            raise ValueError(f"{type(model).__name__} has no mask token yet: call family.check(model, 'mask') before "
                             "training (MaskSubTrainer does, at construction), so the created token is trained.")
        (ph, pw), windowed = _pair(emb.patch_embeddings.patch_size), self.windowed(model)

        def add_mask(module, args, kwargs):
            pixels = args[0] if args else kwargs["pixel_values"]
            h, w = pixels.shape[-2:]
            block = 1
            if windowed:  # block_mask's pixel block (32 px at 224 px), in patches
                block = max(1, round(block_size(h, w) / ph))
            grid = (math.ceil(h / ph), math.ceil(w / pw))
            masked = masked_positions(pixels.shape[0], grid, ratio, block, pixels.device)
            note(INPUT_MASKED)
            if len(args) > 1:  # passed positionally
                return (args[0], masked) + tuple(args[2:]), kwargs
            return args, {**kwargs, "bool_masked_pos": masked}

        with hooked(emb, add_mask, pre=True, with_kwargs=True):
            yield inputs


def _accept_missing_mask_token(module, incompatible_keys):
    """Loading a Swin checkpoint (which cannot carry the created mask token) keeps the current token."""
    for key in [k for k in incompatible_keys.missing_keys if k == "mask_token" or k.endswith(".mask_token")]:
        incompatible_keys.missing_keys.remove(key)
