"""transformers image-text models under MaskSubTrainer: CLIPModel, SiglipModel, VisionTextDualEncoderModel.

Tiny random towers (hidden 32, 2 layers, 32 px images, 8 px patches), real digit images, CLIP's
own BPE tokenizer (the vocabulary open_clip ships) and the WordPiece tokenizer of tiny_bert_dir.
"""
import gzip
import json
import math
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import (AutoImageProcessor, AutoModel, AutoTokenizer, BertModel, CLIPConfig, CLIPImageProcessor,
                          CLIPModel, CLIPTokenizer, SiglipConfig, SiglipModel, Trainer, TrainingArguments,
                          VisionTextDualEncoderModel)

import run_clip
from masksub_hf import MaskSubTrainer
from masksub_hf.losses import RELAXED_LOSSES
from masksub_hf.models import find_family
from masksub_hf.models.hf_clip import ImageTextFamily, eos_positions
from tests.helpers import args as make_args
from tests.helpers import fixed_scores
from tests.test_clip import DIGITS, digit_csv  # noqa: F401  (the fixture: real digit images in open_clip's TSV format)

TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
VISION = dict(TOWER, image_size=32, patch_size=8)  # 4 x 4 = 16 patches
BOS, EOS = 49406, 49407


def clip_tokenizer():
    """CLIP's BPE tokenizer (49,408 tokens) from the vocabulary file open_clip ships: the ids of openai's CLIP."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    merges = gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab] + ["".join(m.split()) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={v: i for i, v in enumerate(vocab)}, merges=[tuple(m.split()) for m in merges])


def tiny_clip(vocab_size=49408, **text):
    torch.manual_seed(0)
    text = {"bos_token_id": BOS, "eos_token_id": EOS, "pad_token_id": EOS, **text}
    config = CLIPConfig(text_config=dict(TOWER, vocab_size=vocab_size, max_position_embeddings=32, **text),
                        vision_config=VISION, projection_dim=16)
    return CLIPModel(config)


def tiny_siglip(vocab_size):
    torch.manual_seed(0)
    return SiglipModel(SiglipConfig(text_config=dict(TOWER, vocab_size=vocab_size, max_position_embeddings=32),
                                    vision_config=VISION))


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    """A local transformers CLIP checkpoint: random tiny towers, CLIP's tokenizer, a 32 px image processor."""
    path = tmp_path_factory.mktemp("tiny-clip")
    tiny_clip().save_pretrained(path)
    clip_tokenizer().save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    return path


def dual_encoder(tiny_clip_dir, tiny_bert_dir):
    """As transformers' contrastive image-text example builds it: CLIP's vision tower + a BERT text encoder."""
    torch.manual_seed(0)
    return VisionTextDualEncoderModel.from_vision_text_pretrained(str(tiny_clip_dir), str(tiny_bert_dir),
                                                                  projection_dim=16)


def images(digits, n):
    """Real 8x8 digits as 32x32 RGB images in [-1, 1]."""
    x = torch.tensor(np.kron(digits[0][:n], np.ones((4, 4))), dtype=torch.float32)
    return (x * 2 - 1)[:, None].expand(-1, 3, -1, -1).contiguous()


def pairs(digits, tokenizer, n=16, max_length=16):
    """Rows of the contrastive example's shape: pixel_values, input_ids, attention_mask."""
    captions = [f"a photo of a {DIGITS[d]}." for d in digits[1][:n]]
    enc = tokenizer(captions, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
    pixels = images(digits, n)
    return [{"pixel_values": pixels[i], "input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i]}
            for i in range(n)]


def collate_fn(examples):
    """transformers' examples/pytorch/contrastive-image-text/run_clip.py collate_fn."""
    pixel_values = torch.stack([example["pixel_values"] for example in examples])
    input_ids = torch.tensor([example["input_ids"].tolist() for example in examples], dtype=torch.long)
    attention_mask = torch.tensor([example["attention_mask"].tolist() for example in examples], dtype=torch.long)
    return {"pixel_values": pixel_values, "input_ids": input_ids, "attention_mask": attention_mask, "return_loss": True}


@pytest.fixture(scope="module")
def models(tiny_clip_dir, tiny_bert_dir, digits):
    """name -> (model builder, training rows) for the three model classes."""
    clip_tok, bert_tok = AutoTokenizer.from_pretrained(tiny_clip_dir), AutoTokenizer.from_pretrained(tiny_bert_dir)
    return {
        "clip": (tiny_clip, pairs(digits, clip_tok)),
        "siglip": (lambda: tiny_siglip(len(bert_tok)), pairs(digits, bert_tok)),
        "dual": (lambda: dual_encoder(tiny_clip_dir, tiny_bert_dir), pairs(digits, bert_tok)),
    }


def _train(model, rows, tmp_path, steps=1, **kw):
    trainer = MaskSubTrainer(model=model, args=make_args(tmp_path, max_steps=steps, **kw), train_dataset=rows,
                             data_collator=collate_fn)
    trainer.train()
    return trainer


def _record(module, store):
    """Record the hidden states a layer receives."""
    return module.register_forward_pre_hook(lambda m, args, kwargs: store.append(
        (args[0] if args else kwargs["hidden_states"]).detach().clone()), with_kwargs=True)


def _is_ordered_subset(sub_row, main_row):
    """Every token of sub_row equals a token of main_row, in increasing positions."""
    j = 0
    for token in sub_row:
        while j < len(main_row) and not torch.allclose(token, main_row[j], atol=1e-6):
            j += 1
        if j == len(main_row):
            return False
        j += 1
    return True


# ---- acceptance 1: the three model classes x mask / drop / path -----------------------------------------
@pytest.mark.parametrize("name", ["clip", "siglip", "dual"])
def test_mask_gives_the_vision_tower_half_the_patches_and_keeps_cls(name, models, tmp_path):
    make, rows = models[name]
    model = make()
    family = find_family(model)
    assert isinstance(family, ImageTextFamily) and family.mask_kind(model) == "tokens dropped"
    seen = []
    handle = _record(model.vision_model.encoder.layers[0], seen)
    trainer = _train(model, rows, tmp_path, per_device_train_batch_size=8)
    handle.remove()
    main, sub = seen
    cls = 0 if name == "siglip" else 1  # SigLIP has no class token
    assert main.shape == (8, cls + 16, 32) and sub.shape == (8, cls + 8, 32)  # half of the 16 patches
    if cls:
        assert torch.allclose(sub[:, 0], main[:, 0], atol=1e-6)  # the class token, first
    assert all(_is_ordered_subset(s, m) for s, m in zip(sub, main))  # kept patches, unchanged, in order
    history = [h for h in trainer.state.log_history if "loss" in h]
    assert history and all(h["loss_main"] > 0 and h["loss_sub"] > 0 for h in history)
    expected = "siglip" if name == "siglip" else "clip"
    assert family.loss_name(model) == expected


@pytest.mark.parametrize("kind", ["drop", "path"])
@pytest.mark.parametrize("name", ["clip", "siglip", "dual"])
def test_drop_and_path_perturb_the_sub_branch_only(name, kind, models, tmp_path):
    make, rows = models[name]
    model = make().train()
    family = find_family(model)
    family.check(model, kind)
    if kind == "path":  # both towers' blocks
        assert len(family.blocks(model)) == 4
    batch = collate_fn(rows[:8])

    def logits(inputs):  # the same random draws each time (the dual encoder's BERT has dropout 0.1 of its own)
        torch.manual_seed(0)
        return model(**inputs).logits_per_image

    clean = logits(batch)
    with getattr(family, kind)(model, batch, 0.5) as sub:
        assert not torch.allclose(logits(sub), clean, atol=1e-4)
    assert torch.allclose(logits(batch), clean, atol=1e-6)  # restored on exit
    trainer = _train(model, rows, tmp_path, masksub_type=kind)
    assert all("loss_sub" in h for h in trainer.state.log_history if "loss" in h)


def test_path_reaches_both_towers_when_only_one_has_drop_path_slots():
    """A Swin vision tower has drop-path slots, a BERT text tower has none: each tower takes its own mechanism
    (the slots alone would leave the text tower unperturbed), and the audit finds a trace in both."""
    from transformers import BertConfig, SwinConfig, SwinModel, VisionTextDualEncoderModel

    from masksub_hf.perturb import audit

    vision = SwinModel(SwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2],
                                  window_size=4, drop_path_rate=0.0))
    text = BertModel(BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    model = VisionTextDualEncoderModel(vision_model=vision, text_model=text).train()
    family = find_family(model)
    assert "the image tower's 2 own drop-path slots and the text tower's 2 residual blocks" in family.describe(model, "path")
    inputs = {"input_ids": torch.randint(0, 100, (8, 6), generator=torch.Generator().manual_seed(0)),
              "pixel_values": torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))}
    clean = model(**inputs)
    torch.manual_seed(0)
    with audit.recording() as seen, family.path(model, inputs, 0.5) as sub:
        perturbed = model(**sub)
        audit.verify(seen, "path", 0.5, model, family)
    assert not torch.allclose(perturbed.text_embeds, clean.text_embeds, atol=1e-4)
    assert not torch.allclose(perturbed.image_embeds, clean.image_embeds, atol=1e-4)
    assert torch.allclose(model(**inputs).text_embeds, clean.text_embeds, atol=1e-6)  # restored on exit


def test_siglip2_drops_only_real_patches_and_says_which_were_kept():
    """SigLIP 2 (NaFlex) pads images to a patch budget: the sub-branch keeps half of each image's real patches and
    passes the matching pixel_attention_mask, which its encoder and pooling head read."""
    from transformers import Siglip2Config, Siglip2Model

    torch.manual_seed(0)
    model = Siglip2Model(Siglip2Config(text_config=dict(TOWER, vocab_size=100, max_position_embeddings=16),
                                       vision_config=dict(TOWER, num_patches=16, patch_size=4)))
    real = torch.ones(4, 16, dtype=torch.long)
    real[2:, 12:] = 0  # two images of 3 x 4 patches, padded to 16
    batch = {"pixel_values": torch.randn(4, 16, 48), "pixel_attention_mask": real, "input_ids": torch.randint(0, 100, (4, 8)),
             "spatial_shapes": torch.tensor([[4, 4], [4, 4], [3, 4], [3, 4]])}
    family = find_family(model)
    assert isinstance(family, ImageTextFamily) and family.loss_name(model) == "siglip"
    seen = []
    handle = _record(model.vision_model.encoder.layers[0], seen)
    with family.mask(model, batch, 0.5) as sub:
        out = model(**sub, return_loss=True)
    handle.remove()
    assert seen[0].shape == (4, 8, 32) and torch.isfinite(out.loss)
    assert sub["pixel_attention_mask"].sum(1).tolist() == [8, 8, 6, 6]  # half of 16 and half of 12 real patches


def _text_inputs(model, rows, ratio=0.5):
    """(main rows, sub-branch rows) of what the text tower's embeddings receive under mask_text."""
    family = ImageTextFamily(mask_text=True)
    family.check(model, "mask")
    batch = collate_fn(rows[:8])
    seen = []
    handle = model.text_model.embeddings.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append((kwargs.get("input_ids", args[0] if args else None),
                                             kwargs.get("position_ids"))), with_kwargs=True)
    model(**batch)
    with family.mask(model, batch, ratio) as sub:
        model(**sub)
    handle.remove()
    return batch, seen[1], sub


def test_mask_text_clip_keeps_start_and_eos_tokens_at_their_positions(models):
    make, rows = models["clip"]
    model = make()
    batch, (ids, positions), sub = _text_inputs(model, rows)
    full = batch["input_ids"]
    eos = eos_positions(model.text_model, full)
    for row, (f, e) in enumerate(zip(full, eos)):
        kept = sub.kept[row]
        n_mid = int(e) - 1  # tokens between <|startoftext|> and EOS: the droppable ones
        assert int(kept.sum()) == 2 + n_mid - n_mid // 2
        k_ids, k_pos = ids[row][kept], positions[row][kept]
        assert k_ids[0] == BOS and k_ids[-1] == EOS and k_pos[-1] == e and k_pos[0] == 0
        assert torch.equal(f[k_pos], k_ids)  # each token with its original position
        assert int(eos_positions(model.text_model, ids[row:row + 1])) == len(k_ids) - 1  # CLIP pools the kept EOS
    assert torch.equal(sub["attention_mask"], sub.kept.long())
    legacy = tiny_clip(eos_token_id=2).text_model  # configs from before transformers#24773: the highest id is EOS
    assert torch.equal(eos_positions(legacy, full), eos)


def test_mask_text_siglip_keeps_the_last_token_and_bert_keeps_cls(models):
    model = models["siglip"][0]()
    batch, (ids, positions), sub = _text_inputs(model, models["siglip"][1])
    length = batch["input_ids"].shape[1]
    assert ids.shape == (8, 1 + (length - 1) - (length - 1) // 2) and sub.kept.all()  # every row as long
    assert (positions[:, -1] == length - 1).all()  # the pooled last token, last
    assert torch.equal(batch["input_ids"].gather(1, positions), ids)
    model = models["dual"][0]()
    batch, (ids, positions), sub = _text_inputs(model, models["dual"][1])
    assert (positions[:, 0] == 0).all() and (ids[:, 0] == batch["input_ids"][:, 0]).all()  # [CLS]
    real = batch["attention_mask"].sum(1)
    assert torch.equal(sub.kept.sum(1), 1 + (real - 1) - (real - 1) // 2)
    assert torch.equal(batch["input_ids"].gather(1, positions)[sub.kept], ids[sub.kept])


def test_mask_text_trains_and_unknown_text_towers_are_refused(models, tmp_path):
    make, rows = models["clip"]
    model = make()
    model.mask_text = True  # what run_clip.py --mask_text sets
    seen = []
    handle = _record(model.text_model.encoder.layers[0], seen)
    _train(model, rows, tmp_path)
    handle.remove()
    assert seen[0].shape[1] == 16 and seen[1].shape[1] < 16  # the sub-branch's captions are shorter
    model.text_model.config.model_type = "mystery_text"
    with pytest.raises(ValueError, match="mask_text needs to know which token the text tower"):
        MaskSubTrainer(model=model, args=make_args(tmp_path), train_dataset=rows, data_collator=collate_fn)


# ---- acceptance 2: the relaxed losses -------------------------------------------------------------
def test_relaxed_losses_by_hand_and_zero_gradient_at_equality():
    sub_rows, main_rows = [[2.0, 0.0], [1.0, 1.0]], [[1.0, 0.0], [0.0, 3.0]]

    def soft_ce(targets, logits):  # mean over rows of -sum softmax(target) log_softmax(logits)
        total = 0.0
        for t, z in zip(targets, logits):
            p = [math.exp(v) / sum(math.exp(u) for u in t) for v in t]
            total -= sum(pi * (zi - math.log(sum(math.exp(u) for u in z))) for pi, zi in zip(p, z))
        return total / len(targets)

    columns = lambda m: [list(c) for c in zip(*m)]  # noqa: E731
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    by_hand = {
        "clip": (soft_ce(main_rows, sub_rows) + soft_ce(columns(main_rows), columns(sub_rows))) / 2,
        # every pair a binary problem against sigmoid(main); summed over texts, averaged over images
        "siglip": sum(-(sig(m) * math.log(sig(s)) + (1 - sig(m)) * math.log(1 - sig(s)))
                      for sr, mr in zip(sub_rows, main_rows) for s, m in zip(sr, mr)) / 2,
    }
    for name, expected in by_hand.items():
        sub = torch.tensor(sub_rows, requires_grad=True)
        loss = RELAXED_LOSSES[name](sub, torch.tensor(main_rows))
        assert loss.item() == pytest.approx(expected, abs=1e-6), name
        loss.backward()
        assert sub.grad.abs().max() > 1e-3, name
        same = torch.tensor(main_rows, requires_grad=True)
        RELAXED_LOSSES[name](same, torch.tensor(main_rows)).backward()
        assert same.grad.abs().max() < 1e-7, name  # sub == main: nothing left to learn


def test_siglip_relaxed_loss_has_siglips_own_scale(models):
    """Against hard targets (the main logits +-inf) the relaxed loss is SiglipModel's own loss."""
    make, rows = models["siglip"]
    out = make()(**collate_fn(rows[:8]))
    hard = 1e4 * (2 * torch.eye(8) - 1)
    assert RELAXED_LOSSES["siglip"](out.logits_per_image, hard).item() == pytest.approx(out.loss.item(), rel=1e-5)


def test_masksub_loss_overrides_the_models_own_choice(models, tmp_path, monkeypatch):
    import masksub_hf.trainer as trainer_module

    calls = []
    real = trainer_module.RELAXED_LOSSES["siglip"]
    monkeypatch.setitem(trainer_module.RELAXED_LOSSES, "siglip", lambda s, m: calls.append(s.shape) or real(s, m))
    make, rows = models["clip"]
    _train(make(), rows, tmp_path, masksub_loss="siglip")
    assert calls == [(8, 8)]  # the image x text matrix, under the loss the user chose instead of 'clip'


# ---- acceptance 3: the contrastive image-text example with only the class swapped --------------------
def example_script(trainer_class, training_args, tiny_clip_dir, tiny_bert_dir, rows):
    """The shape of transformers' examples/pytorch/contrastive-image-text/run_clip.py: a dual encoder from a CLIP
    vision checkpoint and a text checkpoint, tokenised captions, collate_fn with return_loss=True, Trainer."""
    model = dual_encoder(tiny_clip_dir, tiny_bert_dir)
    trainer = trainer_class(model=model, args=training_args, train_dataset=rows, data_collator=collate_fn)
    trainer.train()
    return trainer


def test_the_contrastive_example_with_masksubtrainer(models, tiny_clip_dir, tiny_bert_dir, tmp_path):
    from masksub_hf import MaskSubConfig

    rows = models["dual"][1]
    common = dict(output_dir=str(tmp_path), per_device_train_batch_size=8, learning_rate=1e-2, max_steps=3,
                  logging_steps=1, report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True, seed=0,
                  remove_unused_columns=False)
    trainer = example_script(MaskSubTrainer, TrainingArguments(**common), tiny_clip_dir, tiny_bert_dir, rows)
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logged) == 3 and all(h["loss_main"] > 0 and h["loss_sub"] > 0 for h in logged)
    evaluated = trainer.evaluate(rows[:8])["eval_loss"]  # the example's do_eval: the model's own loss, no sub-branch
    with torch.no_grad():
        assert evaluated == pytest.approx(trainer.model.eval()(**collate_fn(rows[:8])).loss.item(), abs=1e-5)
    plain = example_script(Trainer, TrainingArguments(**common), tiny_clip_dir, tiny_bert_dir, rows).model.state_dict()
    none = example_script(MaskSubTrainer, MaskSubConfig(**common, masksub_type="none"), tiny_clip_dir, tiny_bert_dir,
                          rows).model.state_dict()
    start = dual_encoder(tiny_clip_dir, tiny_bert_dir).state_dict()
    assert any(not torch.equal(v, start[k]) for k, v in plain.items())  # it trained
    assert all(torch.equal(v, none[k]) for k, v in plain.items())  # none is Trainer, bit for bit
    assert any(not torch.allclose(v, trainer.model.state_dict()[k]) for k, v in plain.items())


# ---- acceptance 4: run_clip.py --model_name_or_path ------------------------------------------------
def _argv(model_dir, csv, out, *extra):
    return ["--model_name_or_path", str(model_dir), "--train_data", str(csv), "--csv_label_key", "label",
            "--output_dir", str(out), "--max_steps", "2", "--logging_steps", "1", "--per_device_train_batch_size", "8",
            "--learning_rate", "1e-3", "--use_cpu", "--disable_tqdm", "true", "--seed", "0", *extra]


def test_run_clip_trains_evaluates_and_saves_a_from_pretrained_checkpoint(tiny_clip_dir, digit_csv, tmp_path,  # noqa: F811
                                                                         monkeypatch):
    from tasks import clip_transformers

    evaluated = []
    real = clip_transformers.evaluate
    monkeypatch.setattr(clip_transformers, "evaluate", lambda model, *a, **k: evaluated.append(model) or real(model, *a, **k))
    metrics = run_clip.main(_argv(tiny_clip_dir, digit_csv, tmp_path, "--eval_strategy", "steps", "--eval_steps", "1"))
    saved = json.loads((tmp_path / "all_results.json").read_text())
    for key in ("eval_zeroshot_accuracy", "eval_image_to_text_R@1", "eval_text_to_image_R@10"):
        assert 0 <= saved[key] <= 1 and saved[key] == metrics[key]
    assert saved["eval_image_to_text_R@1"] <= saved["eval_image_to_text_R@5"] <= saved["eval_image_to_text_R@10"]
    history = json.loads((tmp_path / "trainer_state.json").read_text())["log_history"]
    assert any("loss_sub" in h for h in history)
    evals = [h for h in history if "eval_zeroshot_accuracy" in h]  # --eval_strategy: during training, too
    assert [h["step"] for h in evals] == [1, 2] and evals[-1]["eval_image_to_text_R@5"] == metrics["eval_image_to_text_R@5"]
    trained = evaluated[0].eval()
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is CLIPModel
    tok, processor = AutoTokenizer.from_pretrained(tmp_path), AutoImageProcessor.from_pretrained(tmp_path)
    from PIL import Image

    image = processor(images=Image.open(digit_csv.parent / "0.png").convert("RGB"), return_tensors="pt")
    text = tok(["a photo of a zero."], return_tensors="pt")
    with torch.no_grad():
        for get, batch in (("get_image_features", image), ("get_text_features", text)):
            a, b = (clip_transformers.features(getattr(m, get)(**batch)) for m in (loaded, trained))
            assert torch.allclose(a, b, atol=1e-6), get
    start = tiny_clip().state_dict()
    assert any(not torch.equal(v, start[k]) for k, v in loaded.state_dict().items())  # it trained


def test_rerunning_run_clip_resumes_a_transformers_model_where_it_stopped(tiny_clip_dir, digit_csv, tmp_path,  # noqa: F811
                                                                          monkeypatch):
    from masksub_hf import MaskSubTrainer

    constant = ("--lr_scheduler_type", "constant", "--save_strategy", "steps", "--save_steps", "2")
    run_clip.main(_argv(tiny_clip_dir, digit_csv, tmp_path / "whole", *constant) + ["--max_steps", "4"])
    run_clip.main(_argv(tiny_clip_dir, digit_csv, tmp_path / "halves", *constant))  # 2 steps, checkpoint-2
    steps, real = [], MaskSubTrainer.training_step
    monkeypatch.setattr(MaskSubTrainer, "training_step", lambda self, *a, **k: steps.append(1) or real(self, *a, **k))
    run_clip.main(_argv(tiny_clip_dir, digit_csv, tmp_path / "halves", *constant) + ["--max_steps", "4"])
    assert len(steps) == 2  # steps 3 and 4 only: it resumed from checkpoint-2
    state = json.loads((tmp_path / "halves" / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and [h["step"] for h in state["log_history"] if "loss" in h] == [1, 2, 3, 4]
    whole, halves = (AutoModel.from_pretrained(tmp_path / d).state_dict() for d in ("whole", "halves"))
    for name, value in whole.items():
        assert torch.equal(value, halves[name]), name


def test_run_clip_refuses_what_cannot_work(tiny_clip_dir, tiny_bert_dir, digit_csv, tmp_path):  # noqa: F811
    with pytest.raises(ValueError, match="needs an image-text model"):
        run_clip.main(_argv(tiny_bert_dir, digit_csv, tmp_path / "a"))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        run_clip.main(_argv(tmp_path, digit_csv, tmp_path / "b"))
    with pytest.raises(ValueError, match="--mode classify works with open_clip models"):
        run_clip.main(_argv(tiny_clip_dir, digit_csv, tmp_path / "c", "--mode", "classify"))


# ---- acceptance 5: DDP --------------------------------------------------------------------------------
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_clip_loss_is_local_so_ddp_equals_accumulation_not_one_big_batch(models):
    """CLIPModel's loss over 8 pairs is not the mean of its losses over two halves (fewer negatives): under DDP each
    process computes its own matrix, so N processes train as one process accumulating N micro-batches."""
    make, rows = models["clip"]
    model = make()
    whole = model(**collate_fn(rows[:8])).loss
    halves = (model(**collate_fn(rows[:4])).loss + model(**collate_fn(rows[4:8])).loss) / 2
    assert abs(whole.item() - halves.item()) > 1e-3


def test_two_process_ddp_matches_one_process_accumulating(tiny_clip_dir, digit_csv, tmp_path, monkeypatch):  # noqa: F811
    from safetensors.torch import load_file

    common = ["--model_name_or_path", str(tiny_clip_dir), "--train_data", str(digit_csv), "--max_steps", "3",
              "--optim", "sgd", "--learning_rate", "0.5", "--max_grad_norm", "0", "--lr_scheduler_type", "constant",
              "--warmup_steps", "0", "--train_sampling_strategy", "sequential", "--use_cpu", "--disable_tqdm", "true",
              "--seed", "0", "--masksub_type", "mask", "--mask_text", "true", "--logging_steps", "1"]
    fixed_scores(monkeypatch)  # masks that depend on the position only, as clip_ddp.py makes them in each process
    run_clip.main(common + ["--output_dir", str(tmp_path / "one"), "--per_device_train_batch_size", "4",
                            "--gradient_accumulation_steps", "2"])
    two = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(Path(__file__).with_name("clip_ddp.py")), str(tmp_path / "two"), "4",
           "--", *common]
    done = subprocess.run(two, capture_output=True, text=True, timeout=300, cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = (load_file(str(tmp_path / k / "model.safetensors")) for k in ("one", "two"))
    start = tiny_clip().state_dict()
    assert any(not torch.allclose(one[k], start[k]) for k in one)  # it trained
    for name in one:
        assert torch.allclose(one[name], two[name], atol=1e-5, rtol=1e-4), name
    logs = [[h for h in json.loads((tmp_path / k / "trainer_state.json").read_text())["log_history"] if "loss" in h]
            for k in ("one", "two")]
    assert len(logs[0]) == len(logs[1]) == 3
    for a, b in zip(*logs):
        for key in ("loss", "loss_main", "loss_sub"):
            assert a[key] == pytest.approx(b[key], abs=2e-4), key
