"""PEFT (LoRA) models are the base model to MaskSub: found through the wrapper, perturbed as the base
model is, trained through the wrapper, and the saved adapter predicts the same after reloading.

DropSub raises LoRA's own dropout with the model's others: DropSub is every dropout of the trained
model at p, and lora_dropout sits on the input of the only weights being trained, so leaving it at
its own rate would perturb the adapter less than `masksub_ratio` says. (With lora_dropout=0, PEFT
builds an Identity: there is no dropout to raise and the base model's dropouts carry DropSub.)
"""
import math

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoTokenizer

from masksub_hf import MaskSubTrainer
from masksub_hf.models.base import layer_stack
from tests.helpers import args, image_dataset, text_batch, tiny_bert, tiny_vit
from tests.test_vision_families import check_differs, check_tokens, images, structure

VIT_LORA = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], modules_to_save=["classifier"])


def lora_vit(lora_dropout=0.0):
    return get_peft_model(tiny_vit(), LoraConfig(lora_dropout=lora_dropout, **VIT_LORA))


def lora_bert(vocab_size):
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], task_type="SEQ_CLS", lora_dropout=0.0)
    return get_peft_model(tiny_bert(vocab_size=vocab_size), config)


def first_layer(model):
    return layer_stack(model.get_base_model())[0]


def perturbs_the_sub_branch_only(trainer, model, batch, before):
    """drop / path: the sub-branch output differs with the same seed; afterwards the model is as it was."""
    torch.manual_seed(0)
    main = model(**batch).logits
    with trainer.perturbed(model, batch) as sub:
        torch.manual_seed(0)
        assert not torch.allclose(model(**sub).logits, main, atol=1e-4)
    torch.manual_seed(0)
    assert torch.equal(model(**batch).logits, main) and structure(model) == before


@pytest.mark.parametrize("masksub_type", ["mask", "drop", "path"])
def test_lora_vit_is_perturbed_as_the_base_vit(masksub_type, digits, tmp_path):
    model = lora_vit().train()
    trainer = MaskSubTrainer(model=model, args=args(tmp_path, masksub_type=masksub_type))
    assert trainer.family.name.startswith("HF ViT")  # found through the wrapper
    x = images(digits, 16)
    if masksub_type == "mask":  # its patches are dropped, not pixel blocks zeroed
        assert trainer.family.mask_kind(model.get_base_model()) == "tokens dropped"
        check_tokens(trainer, model, x, first_layer, 1)
    else:
        check_differs(trainer, model, x, masksub_type)


@pytest.mark.parametrize("masksub_type", ["mask", "drop", "path"])
def test_lora_bert_is_perturbed_as_the_base_bert(masksub_type, tiny_bert_dir, movie_reviews, tmp_path):
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    model = lora_bert(len(tok)).train()
    trainer = MaskSubTrainer(model=model, args=args(tmp_path, masksub_type=masksub_type))
    batch = text_batch(tok, movie_reviews)
    batch.pop("labels")
    before = structure(model)
    if masksub_type != "mask":
        return perturbs_the_sub_branch_only(trainer, model, batch, before)
    seen = []
    handle = first_layer(model).register_forward_hook(lambda m, a, out: seen.append(a[0].detach()))
    with torch.no_grad():
        model(**batch)
        with trainer.perturbed(model, batch) as sub:
            model(**sub)
    handle.remove()
    full, masked = seen
    real = batch["attention_mask"].sum(1)
    kept = sub["attention_mask"].bool()
    assert masked.shape[1] < full.shape[1] and (kept.sum(1) < real).all()  # fewer tokens reach the first layer
    assert torch.equal(masked[:, 0], full[:, 0])  # [CLS] kept, first
    for b in range(full.shape[0]):  # each kept token is one of the sentence's tokens at its own position
        dist = (masked[b][kept[b]][:, None] - full[b][batch["attention_mask"][b].bool()][None]).abs().sum(-1)
        assert dist.min(-1).values.max() < 1e-5
    assert structure(model) == before


def test_dropsub_raises_loras_own_dropout(tmp_path):
    model = lora_vit(lora_dropout=0.1)
    trainer = MaskSubTrainer(model=model, args=args(tmp_path, masksub_type="drop", masksub_ratio=0.5))
    lora = [m for name, m in model.named_modules() if name.endswith("lora_dropout.default")]
    assert len(lora) == 4 and all(m.p == 0.1 for m in lora)
    with trainer.perturbed(model, {}):
        assert all(m.p == 0.5 for m in lora)
    assert all(m.p == 0.1 for m in lora)


def test_lora_vit_trains_with_mask_and_the_saved_adapter_predicts_the_same(digits, tmp_path):
    model = lora_vit()
    data = image_dataset(digits, n=16)
    trainer = MaskSubTrainer(model=model, train_dataset=data, args=args(
        tmp_path, masksub_type="mask", max_steps=3, learning_rate=1e-2))
    lora_b = model.get_parameter("base_model.model.vit.layers.0.attention.q_proj.lora_B.default.weight")
    assert torch.equal(lora_b, torch.zeros_like(lora_b))  # LoRA starts as a no-op
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 3 and all(math.isfinite(h["loss_main"]) and math.isfinite(h["loss_sub"]) for h in logs)
    assert lora_b.abs().sum() > 0  # the adapter trained

    trainer.save_model(str(tmp_path / "adapter"))
    x = images(digits, 16, n=8)
    model.eval()
    with torch.no_grad():
        trained = model(pixel_values=x).logits
        fresh = tiny_vit().eval()  # the same base weights (seeded), no adapter
        plain = fresh(pixel_values=x).logits
        loaded = PeftModel.from_pretrained(fresh, str(tmp_path / "adapter")).eval()
        reloaded = loaded(pixel_values=x).logits
    assert not torch.allclose(plain, trained, atol=1e-4)  # the adapter changes predictions
    assert torch.allclose(reloaded, trained, atol=1e-6)


def test_another_adapter_that_keeps_the_forward_drops_tokens_too(digits, tmp_path):
    from peft import LoHaConfig

    model = get_peft_model(tiny_vit(), LoHaConfig(r=4, target_modules=["q_proj", "v_proj"], modules_to_save=["classifier"]))
    trainer = MaskSubTrainer(model=model.train(), args=args(tmp_path, masksub_type="mask"))
    assert trainer.family.name.startswith("HF ViT")
    check_tokens(trainer, model, images(digits, 16), first_layer, 1)


@pytest.mark.parametrize("masksub_type", ["mask", "drop", "path"])
def test_prompt_tuning_is_refused_mask_at_construction_and_takes_drop_and_path(masksub_type, tmp_path):
    from peft import PromptTuningConfig

    model = get_peft_model(tiny_bert(), PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=4)).train()
    if masksub_type == "mask":  # its virtual tokens would be misaligned by token dropping: refused, not a crash
        with pytest.raises(ValueError, match="PeftModelForSequenceClassification.*virtual tokens.*drop or path works"):
            MaskSubTrainer(model=model, args=args(tmp_path, masksub_type=masksub_type))
        return
    trainer = MaskSubTrainer(model=model, args=args(tmp_path, masksub_type=masksub_type))
    batch = {"input_ids": torch.randint(5, 900, (4, 12)), "attention_mask": torch.ones(4, 12, dtype=torch.long)}
    before = structure(model)
    perturbs_the_sub_branch_only(trainer, model, batch, before)


def test_lora_swin_creates_and_trains_its_mask_token_through_the_wrapper(digits, tmp_path):
    from datasets import Dataset

    from tests.test_vision_families import MODELS, _seeded

    base = _seeded(MODELS["swin"][0])
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], modules_to_save=["classifier"]))
    x = images(digits, 56, n=16)
    data = Dataset.from_dict({"pixel_values": x.numpy(), "labels": digits[1][:16].tolist()}).with_format("torch")
    trainer = MaskSubTrainer(model=model, args=args(tmp_path, max_steps=2, masksub_type="mask"), train_dataset=data)
    token = base.swin.embeddings.mask_token
    assert token is not None and token.requires_grad  # created on the base model, trainable beside the adapter
    start = token.detach().clone()
    trainer.train()
    assert not torch.equal(token.detach(), start)
    assert all(math.isfinite(h["loss_sub"]) for h in trainer.state.log_history if "loss" in h)
