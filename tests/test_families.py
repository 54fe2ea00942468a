"""Each family's perturbations: what the model really receives, and nothing left behind."""
import pytest
import torch
from torch import nn
from transformers import AutoTokenizer

from masksub_hf import Family, find_family, register_family
from masksub_hf.models import FAMILIES
from masksub_hf.perturb import block_mask, keep_indices
from tests.helpers import text_batch, tiny_bert, tiny_distilbert, tiny_roberta, tiny_vit


def test_keep_indices_keeps_prefix_drops_half_of_the_real_tokens_and_never_padding():
    valid = torch.tensor([[1] * 10 + [0] * 6, [1] * 16, [1] * 3 + [0] * 13]).bool()
    for _ in range(20):
        index, kept = keep_indices(valid, 0.5, num_prefix=1)
        assert kept.sum(1).tolist() == [1 + 9 - 4, 1 + 15 - 7, 1 + 2 - 1]
        assert (index[:, 0] == 0).all()  # CLS always first
        assert valid.gather(1, index)[kept].all()  # padding never kept
        for row, k in zip(index, kept):
            assert row[k].tolist() == sorted(set(row[k].tolist()))  # original order, no repeats


def _capture(module, store):
    return module.register_forward_hook(lambda m, args, out: store.append(args[0].detach().clone()))


@pytest.mark.parametrize("make", [tiny_bert, tiny_roberta, tiny_distilbert])
def test_text_mask_feeds_fewer_tokens_with_their_original_positions(make, tiny_bert_dir, movie_reviews):
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    model = make().train()
    batch = text_batch(tok, movie_reviews)
    if model.config.model_type == "roberta":  # RoBERTa pads with id 1 and numbers positions from 2
        batch["input_ids"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, 1)
    batch.pop("token_type_ids") if model.config.model_type == "distilbert" else None
    batch.pop("labels")
    family = find_family(model)
    emb = model.base_model.embeddings
    words, positions = [], []
    hooks = [_capture(emb.word_embeddings, words), _capture(emb.position_embeddings, positions)]
    full_positions = family.original_positions(model, batch)
    with family.mask(model, batch, 0.5) as sub:
        sub_logits = model(**sub).logits
    for h in hooks:
        h.remove()
    L = batch["input_ids"].shape[1]
    real = batch["attention_mask"].sum(1)
    assert words[0].shape[1] < L and words[0].shape[1] == int((1 + (real - 1) - ((real - 1) * 0.5).floor()).max())
    kept = sub["attention_mask"].bool()
    # every kept token is a real token of its sentence, at the position it had there, CLS first
    for b in range(batch["input_ids"].shape[0]):
        pos = positions[0][b][kept[b]]
        ids = words[0][b][kept[b]]
        pos_list = full_positions[b].tolist()
        cols = [pos_list.index(p) for p in pos.tolist()]
        assert torch.equal(batch["input_ids"][b, cols], ids)
        assert batch["attention_mask"][b, cols].all()
        assert cols[0] == 0
    # and the model computed exactly what it computes for those tokens with explicit positions
    if model.config.model_type == "bert":
        ref = model(input_ids=sub["input_ids"], attention_mask=sub["attention_mask"],
                    token_type_ids=sub["token_type_ids"], position_ids=positions[0]).logits
        assert torch.allclose(sub_logits, ref, atol=1e-5)
    assert not emb.position_embeddings._forward_pre_hooks  # nothing left behind


def test_vit_mask_drops_patches_after_the_position_embedding_and_keeps_cls():
    model = tiny_vit().train()
    family = find_family(model)
    seen = []
    h = find_family(model).blocks(model)[0].register_forward_hook(lambda m, args, out: seen.append(args[0]))
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        full_emb = model.vit.embeddings(x)
        with family.mask(model, {"pixel_values": x}, 0.5) as sub:
            model(**sub)
        model(pixel_values=x)
    h.remove()
    assert seen[0].shape[1] == 1 + 8 and seen[1].shape[1] == 1 + 16
    assert torch.equal(seen[0][:, 0], full_emb[:, 0])  # CLS kept, first
    for b in range(2):  # every kept token is one of this image's embedded patches (position included)
        for t in seen[0][b, 1:]:
            assert (full_emb[b, 1:] - t).abs().sum(-1).min() < 1e-6
    assert not model.vit.embeddings._forward_hooks


def test_block_mask_zeroes_the_share_of_32px_blocks():
    x = torch.ones(3, 3, 64, 96)
    out = block_mask(x, 0.5, block=32)
    blocks = out[:, 0].unfold(1, 32, 32).unfold(2, 32, 32).reshape(3, 6, -1)
    zero = (blocks == 0).all(-1)
    assert zero.sum(1).tolist() == [3, 3, 3]
    assert ((blocks == 0).all(-1) | (blocks == 1).all(-1)).all()  # whole blocks only


def test_block_mask_keeps_the_papers_grid_on_small_images():
    for size, block in ((224, 32), (28, 4)):
        out = block_mask(torch.ones(2, 1, size, size), 0.5)
        assert (out == 0).sum(dim=(1, 2, 3)).tolist() == [24 * block * block] * 2  # 24 of the 7 x 7 cells
        assert out[0, 0].unfold(0, block, block).unfold(1, block, block).reshape(49, -1).std(-1).max() == 0


def test_own_drop_path_covers_resnets_whose_empty_slots_are_none():
    from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

    from masksub_hf.perturb import own_drop_path
    from masksub_hf.perturb.droppath import drop_path_slots

    model = TimmWrapperForImageClassification(TimmWrapperConfig(architecture="resnet18", num_labels=3))
    slots = drop_path_slots(model.timm_model)
    assert len(slots) == 8 and all(getattr(m, n) is None for m, n in slots)
    with own_drop_path(model.timm_model, 0.5):
        assert all(getattr(m, n).drop_prob == 0.5 for m, n in slots)
    assert all(getattr(m, n) is None for m, n in slots)


def test_unknown_model_gets_drop_and_path_and_a_construction_error_for_mask():
    class Block(nn.Module):  # a residual block: x + F(x)
        def __init__(self):
            super().__init__()
            self.linear, self.dropout = nn.Linear(4, 4), nn.Dropout(0.1)

        def forward(self, x):
            return x + self.dropout(self.linear(x))

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList(Block() for _ in range(3))

        def forward(self, x):
            for layer in self.layers:
                x = layer(x)
            return x

    family = find_family(Tiny())
    family.check(Tiny(), "drop")
    family.check(Tiny(), "path")
    with pytest.raises(ValueError, match="register_family") as err:
        family.check(Tiny(), "mask")
    message = str(err.value)
    assert "Tiny" in message and "BERT" in message and "ViT" in message and "drop or path works" in message
    with pytest.raises(ValueError, match="no dropout module") as err:
        find_family(nn.Linear(2, 2)).check(nn.Linear(2, 2), "drop")
    assert "no masksub_type works" in str(err.value)


def test_registered_family_wins():
    class Mine(Family):
        name = "mine"

        def matches(self, model):
            return isinstance(model, nn.Linear)

    fam = register_family(Mine())
    try:
        assert find_family(nn.Linear(2, 2)) is fam
    finally:
        FAMILIES.remove(fam)


def test_builtin_families_are_tried_in_their_declared_priority():
    """The registry's order is the `priority` each family declares, not the order models/__init__ lists them in."""
    from masksub_hf.models.hf_vit import ViTFamily
    from masksub_hf.models.timm import TimmFamily

    builtin = [f.priority for f in FAMILIES]
    assert builtin == sorted(builtin) and len(set(builtin)) == len(builtin)

    class Between(Family):
        name, priority = "between", (ViTFamily.priority + TimmFamily.priority) / 2

        def matches(self, model):
            return False

    fam = register_family(Between(), first=False)
    try:
        names = [type(f).__name__ for f in FAMILIES]
        assert names.index("ViTFamily") < names.index("Between") < names.index("TimmFamily")
    finally:
        FAMILIES.remove(fam)
