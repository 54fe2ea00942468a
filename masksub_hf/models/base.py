"""What the trainer needs to know about a model family, and the registry that finds it.

A family answers a few questions: how to hide part of the input (`mask`), where the residual
blocks and drop-path slots are (`path`), which dropouts exist (`drop`), where the prediction sits
in the output, and which relaxed loss fits it. `drop` and `path` work on any model with a dropout
or a residual stack, so the built-in `GenericFamily` (tried last) takes every model for them; a
family is needed only for `mask`. Each perturbation is a context manager that perturbs the model
while inside and yields the sub-branch inputs (a dict; a `SubBatch`, a dict that also says which tokens were
kept, where per-token predictions must be aligned). Adding a family is one subclass plus `register_family`.
"""
import inspect
import math
from contextlib import ExitStack, contextmanager
from typing import Dict, List, Optional

import torch
from torch import nn

from ..perturb import drop_path, drop_path_slots, dropout_rate, dropout_sites, own_drop_path
from ..perturb.dropout import config_rates
from ..sub_types import PERTURBATION_TYPES

TYPES = PERTURBATION_TYPES  # the Family method of each name is the perturbation (sub_types.py)
TOKENS_DROPPED = "tokens dropped"  # mask_kind of a family whose `drops_tokens` (the plan's and the tests' wording)
# where a prediction sits in a ModelOutput, most common first (classifiers, then image-text models)
PREDICTION_KEYS = ("logits", "logits_per_image")


class SubBatch(dict):
    """The sub-branch inputs (a dict, passed to the model as **inputs), and for token dropping which
    tokens were kept: index (B, K) into the original sequence, kept (B, K) True for real entries.
    Per-token heads need them to align the two branches' predictions; `next_token` says the head predicts the
    token after each position (a causal LM), not a label of the position itself."""

    def __init__(self, inputs: Dict, index: Optional[torch.Tensor] = None, kept: Optional[torch.Tensor] = None,
                 next_token: bool = False):
        super().__init__(inputs)
        self.index, self.kept, self.next_token = index, kept, next_token


def as_sub_batch(yielded) -> SubBatch:
    return yielded if isinstance(yielded, SubBatch) else SubBatch(yielded)


def base_model_of(model: nn.Module) -> nn.Module:
    """The model the families look at: through PEFT wrappers (LoRA...) to the transformers model inside.
    Prompt-learning wrappers are not looked through: their forward adds virtual tokens (peft_wrappers.py)."""
    get_base = getattr(model, "get_base_model", None)
    prompt_learning = getattr(getattr(model, "active_peft_config", None), "is_prompt_learning", False)
    if callable(get_base) and hasattr(model, "peft_config") and not prompt_learning:
        return get_base()
    return model


def embeddings_of(model: nn.Module) -> Optional[nn.Module]:
    """The model's embeddings module (`base_model.embeddings`: BERT-like text models, HF ViT-like vision models)."""
    return getattr(getattr(model, "base_model", model), "embeddings", None)


def accepts(model: nn.Module, name: str) -> bool:
    """Whether the model's forward takes the argument `name` explicitly."""
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


class Family:
    name = "family"
    # where the registry tries this family among the built-in ones, lower first (most specific first: 10 to 100);
    # a family registered with register_family(first=True), a user's, goes before all of them whatever it says
    priority = math.inf
    modality = None  # "text", "image" or "image-text": which row of `--masksub_type auto`'s table applies
    # the README's supported-models table is generated from these (python -m masksub_hf.plan --readme-table)
    mask_doc = "refused"
    masked_kind = "masked"  # what mask_kind says when `mask` does not drop tokens ("mask token", PIXEL_BLOCKS...)
    drop_doc = "every dropout at p (modules, and config rates that some models read at forward time)"
    path_doc = ("the model's own drop-path slots at p, else every block of its layer stacks (a list of lists "
                "flattened)")

    def matches(self, model: nn.Module) -> bool:
        raise NotImplementedError

    # ---- the perturbations (context managers yielding the sub-branch inputs) -------------------
    def mask(self, model: nn.Module, inputs: Dict, ratio: float):
        raise NotImplementedError(self.refusal(model, "mask"))

    @contextmanager
    def drop(self, model: nn.Module, inputs: Dict, ratio: float):
        with dropout_rate(model, ratio):
            yield inputs

    @contextmanager
    def path(self, model: nn.Module, inputs: Dict, ratio: float):
        """Each part by its own mechanism: its drop-path slots where it has them, else its residual blocks. A model
        of towers is taken tower by tower, so one tower's slots (a Swin vision tower's) do not leave another (a BERT
        text tower) unperturbed."""
        with ExitStack() as stack:
            for part, slots, blocks in self.path_parts(model).values():
                stack.enter_context(own_drop_path(part, ratio) if slots else drop_path(blocks, ratio))
            yield inputs

    def path_parts(self, model: nn.Module) -> Dict[str, tuple]:
        """name -> (part, its own drop-path slots, the residual blocks PathSub hooks where it has none): each tower of
        a model of towers, else the model itself."""
        towers = self.towers(model)
        parts = {}
        for name, part in (towers or {"the model": model}).items():
            slots = drop_path_slots(part)
            parts[name] = (part, slots, [] if slots else layer_stack(part) if towers else self.blocks(model))
        return parts

    def drops_tokens(self, model: nn.Module) -> bool:
        """Whether `mask` drops tokens, so the sub-branch is shorter and costs 1 - ratio of the main branch."""
        return False

    def mask_kind(self, model: nn.Module) -> str:
        """What `mask` does to this model, for the plan: TOKENS_DROPPED, else `masked_kind`."""
        return TOKENS_DROPPED if self.drops_tokens(model) else self.masked_kind

    def blocks(self, model: nn.Module) -> List[nn.Module]:
        """The residual blocks that PathSub hooks when the model has no drop-path slot of its own."""
        return layer_stack(model)

    # ---- what the trainer reads ----------------------------------------------------------------
    def sub_inputs(self, model: nn.Module, inputs: Dict) -> Dict:
        """The batch the sub-branch starts from: no labels (it learns the main prediction, not the label). An
        encoder-decoder builds its decoder input from the labels, so it gets that decoder input explicitly: the
        decoder sees what the main branch's decoder saw (BART would otherwise shift the source ids)."""
        sub = {k: v for k, v in inputs.items() if k not in ("labels", "return_loss")}
        labels = inputs.get("labels")
        config = getattr(model, "config", None)
        if (getattr(config, "is_encoder_decoder", False) and labels is not None
                and sub.get("decoder_input_ids") is None and sub.get("decoder_inputs_embeds") is None):
            sub["decoder_input_ids"] = model.prepare_decoder_input_ids_from_labels(labels=labels)
        return sub

    def prediction(self, outputs):
        """The tensor the sub-branch learns: the first of PREDICTION_KEYS in the model's output."""
        if isinstance(outputs, dict):
            for key in PREDICTION_KEYS:
                if outputs.get(key) is not None:
                    return outputs[key]
            seen = ", ".join(k for k, v in outputs.items() if v is not None) or "none"
            raise ValueError(f"MaskSubTrainer found no prediction in the model's output: it looks for "
                             f"{' or '.join(PREDICTION_KEYS)}, and the output has {seen}. Register a family whose "
                             "prediction() returns the right tensor (masksub_hf.register_family).")
        raise ValueError(f"MaskSubTrainer needs the model to return a ModelOutput or dict (got {type(outputs).__name__}); "
                         "set return_dict=True in its config.")

    def loss_name(self, model: nn.Module) -> Optional[str]:
        """The relaxed loss this family's models need whatever their config says (CLIP: 'clip'), or None."""
        return getattr(model, "masksub_loss", None)

    def pair(self, sub_pred: torch.Tensor, main_pred: torch.Tensor, sub: SubBatch, inputs: Dict):
        """(sub, main) predictions aligned for the relaxed loss. Per-token predictions (token
        classification) keep the positions both branches saw and that carry a label (not special,
        not padding), flattened to (N, C). A decoder's predictions (seq2seq) pair position by position where
        the labels are not -100."""
        if main_pred.dim() >= 3 and sub.get("decoder_input_ids") is not None:
            labels = inputs.get("labels")
            if labels is not None and labels.shape == main_pred.shape[:2]:
                valid = labels.ne(-100)
                return sub_pred[valid], main_pred[valid]
            return sub_pred, main_pred
        if main_pred.dim() < 3 or "input_ids" not in inputs or main_pred.shape[1] != inputs["input_ids"].shape[-1]:
            return sub_pred, main_pred
        valid = _token_targets(inputs)
        if sub.index is not None:  # tokens were dropped: the sub-branch's k-th token is index[:, k]
            main_pred = main_pred.gather(1, sub.index[..., None].expand(-1, -1, main_pred.shape[-1]))
            valid = valid.gather(1, sub.index) & sub.kept
        return sub_pred[valid], main_pred[valid]

    # ---- construction-time checks and the plan ------------------------------------------------
    def refusal(self, model: nn.Module, masksub_type: str) -> Optional[str]:
        """Why this model cannot take masksub_type (None when it can): what is missing."""
        if masksub_type == "drop" and not (dropout_sites(model) or config_rates(model)):
            return "it has no dropout module or dropout rate to raise"
        if masksub_type == "path" and not (drop_path_slots(model) or self.blocks(model)):
            return "it has no drop-path slot and no stack of residual blocks was found"
        return None

    def describe(self, model: nn.Module, masksub_type: str, ratio: float = 0.5) -> str:
        """One line: what masksub_type does to this model."""
        if masksub_type == "drop":
            rates = config_rates(model)
            read = f", and the config's {', '.join(rates)} (some models read them at forward time)" if rates else ""
            return f"DropSub: {len(dropout_sites(model))} dropout sites raised to p={ratio} in the sub-branch{read}"
        if masksub_type == "path" and self.towers(model):
            parts = [f"{name}'s {len(slots)} own drop-path slots" if slots else f"{name}'s {len(blocks)} residual blocks"
                     for name, (_, slots, blocks) in self.path_parts(model).items()]
            return f"PathSub at p={ratio}: {' and '.join(parts)}"
        if masksub_type == "path":
            slots = drop_path_slots(model)
            if slots:
                return f"PathSub: the model's own {len(slots)} drop-path slots set to p={ratio}"
            return f"PathSub: {len(self.blocks(model))} residual blocks skipped per sample with p={ratio}"
        return f"MaskSub: {self.mask_kind(model)} at ratio {ratio}"

    def towers(self, model: nn.Module) -> Dict[str, nn.Module]:
        """A model of several towers (image-text): name -> tower; empty for a model of one."""
        return {}

    def must_reach(self, model: nn.Module, masksub_type: str) -> Dict[str, nn.Module]:
        """Named parts that masksub_type must each reach, verified apart at run time (perturb/audit.py): drop and path
        are meant for every tower, and one tower's evidence must not stand in for another the perturbation missed."""
        return self.towers(model) if masksub_type in ("drop", "path") else {}

    def sub_cost(self, model: nn.Module, masksub_type: str, ratio: float = 0.5) -> float:
        """Expected cost of the sub-branch relative to the main branch (forward + backward)."""
        return 1.0 - ratio if masksub_type == "mask" and self.drops_tokens(model) else 1.0

    def check(self, model: nn.Module, masksub_type: str) -> None:
        """Fail at construction, not mid-training, when this model cannot take masksub_type."""
        reason = self.refusal(model, masksub_type)
        if reason is None:
            return
        works = [t for t in TYPES if t != masksub_type and self.refusal(model, t) is None]
        instead = f"--masksub_type {' or '.join(works)} works for this model" if works else \
            "no masksub_type works for this model as it is"
        raise ValueError(
            f"--masksub_type {masksub_type} cannot perturb this {type(model).__name__} ({self.name}): {reason}. "
            f"{instead}; or teach masksub_hf this model with register_family(MyFamily()) (see masksub_hf/models/base.py)."
        )


def _token_targets(inputs: Dict) -> torch.Tensor:
    """Positions whose per-token prediction is learned: labelled ones (not -100), else real tokens."""
    labels = inputs.get("labels")
    if labels is not None and labels.shape == inputs["input_ids"].shape:
        return labels.ne(-100)
    attention = inputs.get("attention_mask")
    return attention.bool() if attention is not None else torch.ones_like(inputs["input_ids"], dtype=torch.bool)


class GenericFamily(Family):
    """Any model: `drop` raises its dropouts, `path` uses its drop-path slots or its residual stack.
    `mask` needs to know where the model's tokens enter, so it is refused here."""

    name = "any other model (drop and path only)"
    mask_doc = "refused at construction: no family knows where its tokens enter (`register_family`)"

    def matches(self, model):
        return True

    def refusal(self, model, masksub_type):
        if masksub_type == "mask":
            families = ", ".join(f.name for f in FAMILIES if not isinstance(f, GenericFamily))
            return f"masking needs to know where its tokens enter, and no family knows this model (families: {families})"
        return super().refusal(model, masksub_type)


FAMILIES: List[Family] = []


def register_family(family: Family, first: bool = True) -> Family:
    """Teach MaskSubTrainer a new model family; registered families are tried before the built-in ones.

    first=False places it by its `priority` instead, after the families of equal or lower priority (the
    built-ins register so: their order is their declared priority, not the order of registration)."""
    if first:
        FAMILIES.insert(0, family)
    else:
        FAMILIES.insert(next((i for i, f in enumerate(FAMILIES) if f.priority > family.priority), len(FAMILIES)),
                        family)
    return family


def find_family(model: nn.Module) -> Family:
    """The first family that knows the model (through PEFT wrappers); GenericFamily otherwise."""
    model = base_model_of(model)
    for family in FAMILIES:
        if family.matches(model):
            return family
    return GENERIC


GENERIC = GenericFamily()


def layer_stack(root: nn.Module) -> List[nn.Module]:
    """The model's stacks of layers, in module order: every outermost ModuleList of composite blocks (encoder.layer,
    transformer.h, an encoder's and a decoder's layers alike), with a list of lists flattened (Funnel's blocks of
    layers). Lists inside a block (T5's sub-layers) and lists of leaf modules (norms, heads) are not layers."""
    def flat(modules):
        return [leaf for m in modules for leaf in (flat(m) if isinstance(m, nn.ModuleList) else [m])]

    def composite(blocks):
        return len(blocks) > 0 and len({type(b) for b in blocks}) == 1 and all(
            any(True for _ in b.children()) and any(True for _ in b.parameters()) for b in blocks)

    found = []

    def visit(module):
        for child in module.children():
            if isinstance(child, nn.ModuleList):
                blocks = flat(child)
                if composite(blocks):
                    found.extend(blocks)
            else:
                visit(child)

    if isinstance(root, nn.ModuleList):
        blocks = flat(root)
        return blocks if composite(blocks) else []
    visit(root)
    return found
