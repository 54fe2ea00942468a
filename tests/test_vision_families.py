"""Every vision model x mask/drop/path either verifiably perturbs or is refused at construction.

The matrix says which outcome each cell must have; each outcome is verified on what the model
receives (tokens reaching the first block, the positions the mask token replaces, the zeroed pixel
blocks) or, for drop/path, on the sub-branch output against the main one with the same weights and
input, and on nothing being left behind afterwards. Real digit images, tiny random configs.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from transformers import (BeitConfig, BeitForImageClassification, ConvNextConfig, ConvNextForImageClassification,
                          Data2VecVisionConfig, Data2VecVisionForImageClassification, FocalNetConfig,
                          FocalNetForImageClassification, Swinv2Config,
                          Swinv2ForImageClassification,
                          DeiTConfig, DeiTForImageClassification, Dinov2Config, Dinov2ForImageClassification,
                          Dinov2WithRegistersConfig, Dinov2WithRegistersForImageClassification, MobileViTConfig,
                          MobileViTForImageClassification, ResNetConfig, ResNetForImageClassification, SwinConfig,
                          SwinForImageClassification, TimmWrapperConfig, TimmWrapperForImageClassification)

from masksub_hf import MaskSubTrainer
from masksub_hf.models import find_family
from masksub_hf.models.base import layer_stack
from masksub_hf.models.hf_image import residual_layouts
from masksub_hf.perturb import dropout_sites
from masksub_hf.perturb.droppath import drop_path
from tests.helpers import args, tiny_vit

VIT = dict(patch_size=4, num_channels=1, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_labels=10)


def first_layer(model):
    return layer_stack(model)[0]


def _seeded(build):
    torch.manual_seed(0)
    return build()


# name: (builder, image size, first block (where the tokens arrive), prefix tokens kept)
MODELS = {
    "vit": (lambda: tiny_vit(), 16, first_layer, 1),
    "deit": (lambda: DeiTForImageClassification(DeiTConfig(image_size=16, intermediate_size=64, **VIT)), 16,
             first_layer, 2),
    # BEiT as released (microsoft/beit-*): relative position bias in every layer, no absolute positions,
    # no mask token in the classifier
    "beit": (lambda: BeitForImageClassification(BeitConfig(
        image_size=16, intermediate_size=64, use_relative_position_bias=True, use_absolute_position_embeddings=False,
        use_mean_pooling=True, use_mask_token=False, drop_path_rate=0.0, **VIT)), 16, None, None),
    # BEiT built with absolute positions and no relative bias: its patches can be dropped
    "beit_absolute": (lambda: BeitForImageClassification(BeitConfig(
        image_size=16, intermediate_size=64, use_relative_position_bias=False, use_absolute_position_embeddings=True,
        drop_path_rate=0.0, **VIT)), 16, first_layer, 1),
    "dinov2": (lambda: Dinov2ForImageClassification(Dinov2Config(image_size=16, mlp_ratio=2, **VIT)), 16,
               first_layer, 1),
    "dinov2_registers": (lambda: Dinov2WithRegistersForImageClassification(Dinov2WithRegistersConfig(
        image_size=16, mlp_ratio=2, num_register_tokens=2, **VIT)), 16, first_layer, 3),
    # 56 px, 4 px patches: block_mask's 8 px cells are 2 x 2 patches (32 px = 8 x 8 patches at 224)
    "swin": (lambda: SwinForImageClassification(SwinConfig(
        image_size=56, patch_size=4, num_channels=1, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=7,
        drop_path_rate=0.0, num_labels=10)), 56, None, None),
    "data2vec_vision": (lambda: Data2VecVisionForImageClassification(Data2VecVisionConfig(
        image_size=16, intermediate_size=64, use_relative_position_bias=True, use_absolute_position_embeddings=False,
        use_mean_pooling=True, drop_path_rate=0.0, **VIT)), 16, None, None),
    "swinv2": (lambda: Swinv2ForImageClassification(Swinv2Config(
        image_size=56, patch_size=4, num_channels=1, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=7,
        drop_path_rate=0.0, num_labels=10)), 56, None, None),
    "focalnet": (lambda: FocalNetForImageClassification(FocalNetConfig(
        image_size=56, patch_size=4, num_channels=1, embed_dim=16, depths=[1, 1], focal_levels=[1, 1],
        focal_windows=[3, 3], num_labels=10)), 56, None, None),
    # layer scale 1.0 (a trained model's scale, not the 1e-6 start): the residual branches matter
    "convnext": (lambda: ConvNextForImageClassification(ConvNextConfig(
        num_channels=1, hidden_sizes=[16, 32], depths=[1, 1], num_stages=2, num_labels=10,
        layer_scale_init_value=1.0)), 28, None, None),
    "resnet": (lambda: ResNetForImageClassification(ResNetConfig(
        num_channels=1, embedding_size=16, hidden_sizes=[16, 32], depths=[2, 2], layer_type="basic", num_labels=10)),
               28, None, None),
    "mobilevit": (lambda: MobileViTForImageClassification(MobileViTConfig(
        num_channels=1, image_size=32, patch_size=2, hidden_sizes=[16, 16, 16], neck_hidden_sizes=[8, 8, 16, 16, 16, 16, 32],
        num_attention_heads=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout_prob=0.0,
        num_labels=10)), 28, None, None),
    "timm_vit": (lambda: TimmWrapperForImageClassification(TimmWrapperConfig(
        architecture="vit_tiny_patch16_224", num_labels=10,
        model_args=dict(img_size=16, patch_size=4, in_chans=1, embed_dim=32, depth=2, num_heads=2))), 16,
                 lambda m: m.timm_model.blocks[0], 1),
    "timm_vit_registers": (lambda: TimmWrapperForImageClassification(TimmWrapperConfig(
        architecture="vit_tiny_patch16_224", num_labels=10,
        model_args=dict(img_size=16, patch_size=4, in_chans=1, embed_dim=32, depth=2, num_heads=2, reg_tokens=2))), 16,
                           lambda m: m.timm_model.blocks[0], 3),
    # EVA-02: rotary positions; its patch-drop slot (None at rate 0) returns the kept indices for them
    "timm_eva": (lambda: TimmWrapperForImageClassification(TimmWrapperConfig(
        architecture="eva02_tiny_patch14_224", num_labels=10,
        model_args=dict(img_size=16, patch_size=4, in_chans=1, embed_dim=32, depth=2, num_heads=2))), 16,
                 lambda m: m.timm_model.blocks[0], 1),
    "timm_resnet": (lambda: TimmWrapperForImageClassification(TimmWrapperConfig(
        architecture="resnet18", num_labels=10, model_args=dict(in_chans=1, layers=[1, 1, 1, 1]))), 28, None, None),
}

TOKENS, MASK_TOKEN, PIXELS, DIFFERS = "tokens dropped", "mask token", "pixel blocks", "sub-branch differs"
REFUSED = "refused at construction"
MATRIX = {
    "vit": (TOKENS, DIFFERS, DIFFERS),
    "deit": (TOKENS, DIFFERS, DIFFERS),
    "beit": (MASK_TOKEN, DIFFERS, DIFFERS),
    "beit_absolute": (TOKENS, DIFFERS, DIFFERS),
    "dinov2": (TOKENS, DIFFERS, DIFFERS),
    "dinov2_registers": (TOKENS, DIFFERS, DIFFERS),
    "swin": (MASK_TOKEN, DIFFERS, DIFFERS),
    "data2vec_vision": (MASK_TOKEN, DIFFERS, DIFFERS),
    "swinv2": (MASK_TOKEN, DIFFERS, DIFFERS),
    "focalnet": (MASK_TOKEN, DIFFERS, DIFFERS),
    "convnext": (PIXELS, REFUSED, DIFFERS),  # no dropout anywhere in ConvNeXt
    "resnet": (PIXELS, REFUSED, DIFFERS),  # no dropout anywhere in HF ResNet
    "mobilevit": (PIXELS, DIFFERS, DIFFERS),
    "timm_vit": (TOKENS, DIFFERS, DIFFERS),
    "timm_vit_registers": (TOKENS, DIFFERS, DIFFERS),
    "timm_eva": (TOKENS, DIFFERS, DIFFERS),
    "timm_resnet": (PIXELS, DIFFERS, DIFFERS),
}
CELLS = [(name, t, outcome) for name, outcomes in MATRIX.items() for t, outcome in zip(("mask", "drop", "path"), outcomes)]


def images(digits, size, n=4):
    """Real digits, nearest-upscaled to size x size and normalised (no pixel is exactly 0)."""
    x = torch.tensor(digits[0][:n])[:, None]
    return (F.interpolate(x, size=(size, size), mode="nearest") - 0.3) / 0.4


def structure(model):
    """What a perturbation could leave behind: module types, hooks, dropout rates, parameters."""
    modules = [(n, type(m).__name__, len(m._forward_hooks), len(m._forward_pre_hooks)) for n, m in model.named_modules()]
    return modules, [getattr(m, a) for m, a in dropout_sites(model)], [n for n, _ in model.named_parameters()]


def seeded_logits(model, inputs, seed=0):
    torch.manual_seed(seed)
    return model(**inputs).logits


def clean_then_perturbed(trainer, model, x):
    """One clean forward, then one in the sub-branch; the model must come out as it went in. Returns the sub batch."""
    before = structure(model)
    with torch.no_grad():
        model(pixel_values=x)
        with trainer.perturbed(model, {"pixel_values": x}) as sub:
            model(**sub)
    assert structure(model) == before  # nothing left behind
    return sub


def check_tokens(trainer, model, x, first_block, prefix):
    with torch.no_grad():  # distinct positions (DeiT starts them at zero), so blank patches are told apart
        for name, param in model.named_parameters():
            if "position_embeddings" in name or "pos_embed" in name:
                param.normal_()
    seen = []
    handle = first_block(model).register_forward_hook(lambda m, a, out: seen.append(a[0].detach()))
    clean_then_perturbed(trainer, model, x)
    handle.remove()
    full, masked = seen
    patches = full.shape[1] - prefix
    assert masked.shape[1] == prefix + patches - math.floor(patches * 0.5) < full.shape[1]
    assert torch.equal(masked[:, :prefix], full[:, :prefix])  # CLS / distillation / registers kept, in front
    for b in range(x.shape[0]):  # every kept token is one of this image's patches, position included
        dist = (masked[b, prefix:, None] - full[b, None, prefix:]).abs().sum(-1)
        assert dist.min(-1).values.max() < 1e-5
        assert len(set(dist.argmin(-1).tolist())) == masked.shape[1] - prefix  # distinct patches


def check_mask_token(trainer, model, x, block):
    emb = model.base_model.embeddings
    received, outputs = [], []
    # what the embeddings' forward really receives (registered first, so it runs after the family's pre-hook)
    receive = emb.forward
    emb.forward = lambda *a, **kw: received.append(kw.get("bool_masked_pos")) or receive(*a, **kw)
    post = emb.register_forward_hook(lambda m, a, out: outputs.append(out[0] if isinstance(out, tuple) else out))
    sub = clean_then_perturbed(trainer, model, x)
    post.remove()
    del emb.forward
    assert sub == {"pixel_values": x}
    assert received[0] is None and received[1].dtype == torch.bool  # the model's own door, in the sub-branch only
    masked = received[1]
    grid = int(math.isqrt(masked.shape[1]))
    cells = (grid // block) ** 2
    assert masked.sum(1).tolist() == [int(cells * 0.5) * block * block] * x.shape[0]  # the ratio of the cells
    blocks = masked.view(-1, grid // block, block, grid // block, block).float()
    assert (blocks.amin((2, 4)) == blocks.amax((2, 4))).all()  # whole block x block cells
    clean, out = outputs
    offset = out.shape[1] - masked.shape[1]  # CLS in front for BEiT
    token = emb.mask_token.reshape(-1)
    assert torch.allclose(out[:, offset:][masked], token.expand(int(masked.sum()), -1))  # masked: the mask token
    assert torch.equal(out[:, offset:][~masked], clean[:, offset:][~masked])  # the others untouched


def check_pixels(trainer, model, x):
    with trainer.perturbed(model, {"pixel_values": x}) as sub:
        masked = sub["pixel_values"]
    size = x.shape[-1]
    block = math.ceil(size / 7)
    cells = masked[:, 0].unfold(1, block, block).unfold(2, block, block).reshape(x.shape[0], -1, block * block)
    zero = (cells == 0).all(-1)
    assert zero.sum(1).tolist() == [24] * x.shape[0]  # 24 of the 7 x 7 cells, as the paper's 32 px at 224 px
    assert torch.equal(cells[~zero], x[:, 0].unfold(1, block, block).unfold(2, block, block).reshape(
        x.shape[0], -1, block * block)[~zero])


def check_differs(trainer, model, x, masksub_type):
    inputs = {"pixel_values": x}
    before = structure(model)
    main = seeded_logits(model, inputs)
    with trainer.perturbed(model, inputs) as sub:
        perturbed = seeded_logits(model, sub)
        assert structure(model) != before  # something really is in force
    assert not torch.allclose(perturbed, main, atol=1e-4)
    assert structure(model) == before  # restored exactly
    assert torch.equal(seeded_logits(model, inputs), main)


@pytest.mark.parametrize("name,masksub_type,outcome", CELLS, ids=[f"{n}-{t}" for n, t, _ in CELLS])
def test_vision_matrix(name, masksub_type, outcome, digits, tmp_path):
    build, size, first_block, prefix = MODELS[name]
    model = _seeded(build).train()
    config = args(tmp_path, masksub_type=masksub_type)
    if outcome == REFUSED:
        with pytest.raises(ValueError, match=f"{type(model).__name__}.*register_family") as err:
            MaskSubTrainer(model=model, args=config)
        assert "mask or path works" in str(err.value)
        return
    trainer = MaskSubTrainer(model=model, args=config)
    assert trainer.family.refusal(model, masksub_type) is None
    x = images(digits, size)
    if outcome == TOKENS:
        assert trainer.family.mask_kind(model) == "tokens dropped"
        check_tokens(trainer, model, x, first_block, prefix)
    elif outcome == MASK_TOKEN:
        assert trainer.family.mask_kind(model).startswith("mask token")
        check_mask_token(trainer, model, x, block=1 if name.endswith("beit") or name == "data2vec_vision" else 2)
    elif outcome == PIXELS:
        assert trainer.family.mask_kind(model).startswith("pixel blocks")
        check_pixels(trainer, model, x)
    else:
        check_differs(trainer, model, x, masksub_type)


def test_no_pixel_model_is_handed_a_path_that_perturbs_nothing(digits):
    """The named residual blocks really run (and are perturbed) in a forward: none is skipped silently."""
    for name in ("resnet", "mobilevit"):
        build, size, _, _ = MODELS[name]
        model = _seeded(build).train()
        counters = []
        with torch.no_grad():
            for modules, branch, rows in residual_layouts(model):
                with drop_path(modules, 0.5, branch=branch, rows_per_sample=rows) as counter:
                    model(pixel_values=images(digits, size))
                counters.append(counter)
        assert all(c["modules"] > 0 and c["applied"] == c["modules"] for c in counters), (name, counters)
        assert len(find_family(model).blocks(model)) == sum(c["modules"] for c in counters)


def test_mobilevit_transformer_layers_drop_per_image_not_per_row():
    """Its transformer layers see (batch * patch_area, patches, channels): one image's rows share one draw."""
    model = _seeded(MODELS["mobilevit"][0]).train()
    modules, _, rows = next(layout for layout in residual_layouts(model) if layout[2] > 1)
    layer, images_n = modules[0], 64
    x = torch.randn(images_n * rows, 5, layer.layernorm_before.normalized_shape[0])
    with torch.no_grad():
        full = layer(x)
        with drop_path([layer], 0.5, branch=False, rows_per_sample=rows):
            out = layer(x)
    dropped = (out - x).abs().amax((1, 2)).view(images_n, rows) == 0
    kept = torch.isclose(out, x + (full - x) * 2, atol=1e-5).all(-1).all(-1).view(images_n, rows)
    assert (dropped.all(1) | kept.all(1)).all()  # whole images only
    assert 0 < dropped.all(1).sum() < images_n


def test_a_pixel_model_without_a_known_residual_layout_is_refused_path():
    from torch import nn

    class Plain(nn.Module):
        main_input_name = "pixel_values"

        def __init__(self):
            super().__init__()
            self.stages = nn.ModuleList([nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 3)])

    with pytest.raises(ValueError, match="no residual layout.*mask works"):
        find_family(Plain()).check(Plain(), "path")


def test_mask_token_model_trains_its_created_token_and_logs_both_branches(digits, tmp_path, caplog):
    from datasets import Dataset

    build, size, _, _ = MODELS["swin"]
    model = _seeded(build)
    assert model.swin.embeddings.mask_token is None
    x = images(digits, size, n=16)
    data = Dataset.from_dict({"pixel_values": x.numpy(), "labels": digits[1][:16].tolist()}).with_format("torch")
    with caplog.at_level("WARNING"):
        trainer = MaskSubTrainer(model=model, args=args(tmp_path, max_steps=2, masksub_type="mask"), train_dataset=data)
    assert "created one" in caplog.text
    token = model.swin.embeddings.mask_token
    start = token.detach().clone()
    trainer.train()
    assert not torch.equal(token.detach(), start)  # trained: it was in the optimizer
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2 and all(math.isfinite(h["loss_main"]) and math.isfinite(h["loss_sub"]) for h in logs)
    # a checkpoint of the trained model loads back into it (the classifier cannot carry the token)
    trainer.save_model(str(tmp_path / "saved"))
    assert trainer._load_pretrained_weights(str(tmp_path / "saved"))


def test_created_beit_mask_token_is_saved_and_loaded_back(tmp_path):
    """BEiT's config says whether the model has a mask token: it is set, so the checkpoint carries it."""
    build = MODELS["beit"][0]
    model = _seeded(build)
    MaskSubTrainer(model=model, args=args(tmp_path, masksub_type="mask"))
    assert model.config.use_mask_token
    with torch.no_grad():
        model.beit.embeddings.mask_token.fill_(0.25)
    model.save_pretrained(tmp_path / "beit")
    loaded = BeitForImageClassification.from_pretrained(tmp_path / "beit")
    assert torch.equal(loaded.beit.embeddings.mask_token, model.beit.embeddings.mask_token)


CHECKPOINTED = [("swin", "mask", True), ("swin", "mask", False), ("beit", "mask", False), ("swin", "path", False),
                ("mobilevit", "path", False)]


@pytest.mark.parametrize("name,masksub_type,reentrant", CHECKPOINTED)
def test_gradient_checkpointing_keeps_the_vision_perturbations(name, masksub_type, reentrant, digits, tmp_path):
    """Checkpointed layers are recomputed in the backward pass: the same mask token positions, drop-path
    slots and residual hooks must be in force there, so the gradients equal those without checkpointing."""
    build, size, _, _ = MODELS[name]
    model = _seeded(build)
    trainer = MaskSubTrainer(model=model, args=args(tmp_path, masksub_type=masksub_type))
    trainer.current_gradient_accumulation_steps = 1
    batch = {"pixel_values": images(digits, size, n=4), "labels": torch.tensor(digits[1][:4])}
    grads = []
    for checkpointing in (False, True):
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
        model.zero_grad()
        torch.manual_seed(0)
        trainer.training_step(model, dict(batch))
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    plain, checkpointed = grads
    assert plain.keys() == checkpointed.keys() and len(plain) == len(list(model.parameters()))
    if masksub_type == "mask":
        assert plain[next(n for n in plain if n.endswith("mask_token"))].abs().sum() > 0  # the token learns
    for n in plain:
        assert torch.allclose(plain[n], checkpointed[n], atol=1e-6, rtol=1e-4), n


def test_a_mask_token_model_whose_token_cannot_be_sized_is_refused_at_construction(tmp_path):
    from torch import nn

    model = _seeded(MODELS["swin"][0])
    model.swin.embeddings.patch_embeddings.projection = nn.Identity()  # nothing says the token's width
    with pytest.raises(ValueError, match="SwinForImageClassification.*no mask token.*drop or path works"):
        MaskSubTrainer(model=model, args=args(tmp_path, masksub_type="mask"))
    assert model.swin.embeddings.mask_token is None
