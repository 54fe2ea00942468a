"""PEFT wrappers. Adapters that keep the base model's forward (LoRA, LoHa, IA3...) are looked through
(`base_model_of`): the base model's family perturbs it, and the forward goes through the wrapper, so
every type behaves as on the base model. DropSub raises LoRA's own `lora_dropout` too: it is a
dropout of the trained model, and the one on the input of the only weights being trained.

Prompt-learning wrappers (prompt tuning, prefix tuning, P-tuning) are not looked through: their
forward prepends virtual tokens (or past key values) that the base model's family does not see, so
dropping tokens would misalign them. They take `drop` and `path` (the base model's dropouts and
residual stack, found through the wrapper) and are refused `mask` at construction.
"""
from .base import Family, layer_stack


def is_prompt_learning(model) -> bool:
    return bool(getattr(getattr(model, "active_peft_config", None), "is_prompt_learning", False))


class PromptLearningFamily(Family):
    priority = 30  # before the text families: the wrapper looks like a text model
    name = "PEFT prompt-learning wrappers (prompt/prefix tuning, P-tuning: drop and path only)"
    modality = "text"
    mask_doc = "refused at construction: token dropping would misalign the virtual tokens"

    def matches(self, model):
        return hasattr(model, "peft_config") and is_prompt_learning(model)

    def blocks(self, model):
        return layer_stack(model.get_base_model())

    def refusal(self, model, masksub_type):
        if masksub_type == "mask":
            return ("its forward prepends virtual tokens that token dropping would misalign (a LoRA-style adapter, "
                    "which keeps the base model's forward, takes mask)")
        return super().refusal(model, masksub_type)
