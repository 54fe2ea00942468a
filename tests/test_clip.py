"""open_clip under MaskSubTrainer: run_clip.main on real digit images, sub-branch inputs, save/load, loss, DDP, bad input."""
import json
import logging
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import run_clip
from masksub_hf import MaskSubTrainer
from masksub_hf.losses import RELAXED_LOSSES, resolve_loss_name
from masksub_hf.models import find_family
from masksub_hf.models.open_clip import OpenCLIPFamily
from masksub_hf.models.open_clip_training import MAX_LOGIT_SCALE, ClampLogitScale, OpenCLIPForMaskSub
from masksub_hf.perturb import audit, drop_path_slots
from masksub_hf.recommend import CHOICES
from masksub_hf.wallclock import with_wallclock
from tasks import clip as data
from tests.helpers import args as make_args

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TINY_TEXT = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}
TINY_VIT = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8,
                                             "head_width": 16}, "text_cfg": TINY_TEXT}
TINY_CNN = {"embed_dim": 32, "vision_cfg": {"timm_model_name": "test_efficientnet", "timm_model_pretrained": False,
                                             "timm_pool": "avg", "timm_proj": "linear", "image_size": 32},
            "text_cfg": TINY_TEXT}
# a CNN tower whose blocks have skip connections (test_efficientnet's have none): its drop-path slots run
TINY_RESNET = {**TINY_CNN, "vision_cfg": {**TINY_CNN["vision_cfg"], "timm_model_name": "test_resnet"}}


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    root = tmp_path_factory.mktemp("configs")
    paths = {}
    for name, cfg in (("tiny-vit", TINY_VIT), ("tiny-cnn", TINY_CNN), ("tiny-resnet", TINY_RESNET)):
        paths[name] = root / f"{name}.json"
        paths[name].write_text(json.dumps(cfg))
    return {k: str(v) for k, v in paths.items()}


@pytest.fixture(scope="module")
def digit_csv(tmp_path_factory, digits):
    """Real digit images as PNG files (32x32) and a TSV in open_clip's format with template captions."""
    from PIL import Image

    root = tmp_path_factory.mktemp("digits")
    images, labels = digits
    rows = ["filepath\ttitle\tlabel"]
    for i in range(96):
        big = np.kron(images[i], np.ones((4, 4))) * 255
        Image.fromarray(big.astype(np.uint8)).save(root / f"{i}.png")
        name = DIGITS[labels[i]]
        rows.append(f"{i}.png\t{data.TEMPLATES[i % len(data.TEMPLATES)].format(name)}\t{name}")
    (root / "pairs.tsv").write_text("\n".join(rows) + "\n")
    return root / "pairs.tsv"


def _argv(config, csv, out, *extra):
    return ["--model", config, "--train_data", str(csv), "--csv_label_key", "label", "--output_dir", str(out),
            "--max_steps", "2", "--logging_steps", "1", "--per_device_train_batch_size", "8", "--learning_rate", "1e-3", "--use_cpu",
            "--disable_tqdm", "true", "--seed", "0", *extra]


def _wrapper(config, mode="contrastive"):
    torch.manual_seed(0)
    clip, cfg, pcfg, tok, pre, _ = data.build_clip(config)
    heads = data.class_embeddings(clip, tok, DIGITS) if mode == "classify" else None
    return OpenCLIPForMaskSub(clip, mode, heads, model_cfg=cfg, preprocess_cfg=pcfg), tok, pre


def _dataset(csv, tok, pre, with_labels=False):
    return data.ClipDataset(data.csv_pairs(str(csv), "filepath", "title", "\t", "label"), pre, tok, with_labels)


# ---- acceptance 1: both modes through main(argv) ------------------------------------------------------
def test_both_modes_train_via_main_and_write_results(configs, digit_csv, tmp_path):
    results = run_clip.main(_argv(configs["tiny-vit"], digit_csv, tmp_path / "c", "--compare_baseline", "true"))
    assert set(results) == {"baseline", "masksub"}
    for run in ("baseline", "masksub"):
        saved = json.loads((tmp_path / "c" / run / "all_results.json").read_text())
        assert 0 <= saved["eval_zeroshot_accuracy"] <= 1 and 0 <= saved["eval_image_to_text_R@10"] <= 1
        assert saved["eval_image_to_text_R@1"] <= saved["eval_image_to_text_R@5"] <= saved["eval_image_to_text_R@10"]
        assert "template captions" not in saved["data"] and saved["data"].endswith("(CSV)")
        assert (tmp_path / "c" / run / "trainer_state.json").exists()
    history = json.loads((tmp_path / "c" / "masksub" / "trainer_state.json").read_text())["log_history"]
    assert any("loss_sub" in h for h in history)  # the sub-branch ran
    assert not any("loss_sub" in h for h in json.loads(
        (tmp_path / "c" / "baseline" / "trainer_state.json").read_text())["log_history"])
    metrics = run_clip.main(_argv(configs["tiny-vit"], digit_csv, tmp_path / "k", "--mode", "classify"))
    assert 0 <= metrics["eval_accuracy"] <= 1
    assert json.loads((tmp_path / "k" / "all_results.json").read_text())["eval_accuracy"] == metrics["eval_accuracy"]


@pytest.mark.parametrize("mode,key", [("contrastive", "eval_zeroshot_accuracy"), ("classify", "eval_accuracy")])
def test_eval_strategy_evaluates_during_training_on_trainers_schedule(configs, digit_csv, tmp_path, mode, key):
    """The CLIP metrics, not an evaluation loss, are what --eval_strategy logs: the curves of bench/quality.py."""
    metrics = run_clip.main(_argv(configs["tiny-vit"], digit_csv, tmp_path, "--mode", mode, "--max_steps", "4",
                                  "--eval_strategy", "steps", "--eval_steps", "2"))
    history = with_wallclock(json.loads((tmp_path / "trainer_state.json").read_text())["log_history"], str(tmp_path))
    evals = [h for h in history if key in h]
    assert [h["step"] for h in evals] == [2, 4] and all(h["elapsed_s"] > 0 for h in evals)
    assert evals[-1][key] == metrics[key]  # the last one evaluated the final model


def test_class_embeddings_are_computed_without_dropout_and_leave_the_mode_as_it_was():
    """The zero-shot classifier (eval during training, the classify head's init) is the prompts' embedding, not a
    dropout draw: a text tower in training mode gives the same classifier twice, and stays in training mode."""
    class Clip(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.drop = torch.nn.Embedding(50, 8), torch.nn.Dropout(0.5)

        def encode_text(self, ids, normalize=False):
            x = self.drop(self.emb(ids).mean(1))
            return torch.nn.functional.normalize(x, dim=-1) if normalize else x

    def tokenizer(texts):
        return torch.tensor([[sum(map(ord, t)) % 50, len(t) % 50] for t in texts])

    torch.manual_seed(0)
    clip = Clip().train()
    first, second = data.class_embeddings(clip, tokenizer, DIGITS), data.class_embeddings(clip, tokenizer, DIGITS)
    assert torch.equal(first, second) and clip.training
    assert torch.allclose(first, data.class_embeddings(clip.eval(), tokenizer, DIGITS)) and not clip.training


def test_refuses_non_empty_output_dir(configs, digit_csv, tmp_path):
    (tmp_path / "keep.txt").write_text("results")
    with pytest.raises(FileExistsError, match="--overwrite_output_dir"):
        run_clip.main(_argv(configs["tiny-vit"], digit_csv, tmp_path))


def _record_step(model, dataset, module, tmp_path, pre_hook, **kw):
    """Run one MaskSub training step; return what `pre_hook` recorded, main branch first."""
    seen = []
    handle = module.register_forward_pre_hook(lambda m, a: seen.append(pre_hook(a[0])))
    trainer = MaskSubTrainer(model=model, args=make_args(tmp_path, max_steps=1, **kw), train_dataset=dataset)
    trainer.train()
    handle.remove()
    return seen


def test_vit_sub_branch_gets_fewer_patches_main_gets_all(configs, digit_csv, tmp_path):
    model, tok, pre = _wrapper(configs["tiny-vit"])
    assert isinstance(find_family(model), OpenCLIPFamily) and resolve_loss_name(model) == "clip"
    tokens = _record_step(model, _dataset(digit_csv, tok, pre), model.clip.visual.ln_pre, tmp_path,
                          lambda x: x.shape[1])
    assert tokens == [1 + 16, 1 + 8]  # class token + 4x4 patches; the sub-branch keeps half the patches
    assert isinstance(model.clip.visual.patch_dropout, torch.nn.Identity)  # restored after the sub-branch


def test_cnn_tower_is_block_masked(configs, digit_csv, tmp_path):
    model, tok, pre = _wrapper(configs["tiny-cnn"])
    main, sub = _record_step(model, _dataset(digit_csv, tok, pre), model.clip.visual, tmp_path,
                             lambda x: x.detach().clone())
    assert main.shape == sub.shape == (8, 3, 32, 32)

    def zero_cells(x):  # per image, how many cells of the 7 x 7 grid of 5-pixel blocks are all zero
        zero = (x == 0).all(1)
        return [sum(bool(z[5 * i:5 * i + 5, 5 * j:5 * j + 5].all()) for i in range(7) for j in range(7)) for z in zero]

    assert zero_cells(main) == [0] * 8  # the main branch sees whole images
    assert zero_cells(sub) == [int(49 * 0.5)] * 8  # the sub-branch: half the blocks zeroed, as 32 px blocks at 224
    kept = (sub != 0).all(1, keepdim=True).expand_as(sub)
    assert torch.equal(sub[kept], main[kept])  # and nothing else changed


def test_auto_on_a_contrastive_cnn_tower_takes_its_measured_row(configs, tmp_path, caplog):
    """A pretrained CNN tower trained contrastively takes the row of clip-contrastive-cnn (drop first), not the ViT
    tower's mask, and its log line claims no gain, as that preset established none."""
    model, _, _ = _wrapper(configs["tiny-cnn"])
    choice = CHOICES[("CNN-style image-text", "contrastive")][0]
    with caplog.at_level(logging.WARNING, logger="masksub_hf.trainer"):
        trainer = MaskSubTrainer(model=model, args=make_args(tmp_path, masksub_type="auto"))
    assert trainer.masksub_choice is choice and choice.masksub_type != "mask"
    assert (trainer.masksub_type, trainer.masksub_ratio) == (choice.masksub_type, choice.ratio)
    assert (f"contrastive on a CNN-style image-text model -> {choice.masksub_type} at {choice.ratio:g}; "
            + ("a gain established" if choice.established else "no gain established in this domain")) in caplog.text


def test_saved_model_loads_back_in_open_clip_with_same_embeddings(configs, digit_csv, tmp_path):
    import open_clip
    from safetensors.torch import load_file

    run_clip.main(_argv(configs["tiny-vit"], digit_csv, tmp_path))
    loaded = open_clip.create_model(f"local-dir:{tmp_path / 'open_clip'}").eval()
    trained, tok, pre = _wrapper(configs["tiny-vit"])
    state = load_file(str(tmp_path / "model.safetensors"))  # what Trainer saved: the wrapper's weights
    trained.load_state_dict(state)
    trained.eval()
    batch = torch.utils.data.default_collate([_dataset(digit_csv, tok, pre)[i] for i in range(4)])
    with torch.no_grad():
        for a, b in ((loaded.encode_image(batch["pixel_values"]), trained.clip.encode_image(batch["pixel_values"])),
                     (loaded.encode_text(batch["input_ids"]), trained.clip.encode_text(batch["input_ids"]))):
            assert torch.allclose(a, b, atol=1e-6)
    start = _wrapper(configs["tiny-vit"])[0].state_dict()
    assert any(not torch.equal(v, start[k]) for k, v in trained.state_dict().items())  # it trained


def test_logit_scale_is_clamped_after_each_step(configs, digit_csv, tmp_path):
    model, tok, pre = _wrapper(configs["tiny-vit"])
    with torch.no_grad():
        model.clip.logit_scale.fill_(6.0)  # above ln 100
    trainer = MaskSubTrainer(model=model, args=make_args(tmp_path, max_steps=1, learning_rate=1e-4),
                             train_dataset=_dataset(digit_csv, tok, pre), callbacks=[ClampLogitScale()])
    trainer.train()
    assert model.clip.logit_scale.item() == pytest.approx(MAX_LOGIT_SCALE)


@pytest.mark.parametrize("tower", ["tiny-vit", "tiny-resnet"])
def test_drop_and_path_perturb_the_sub_branch_only(configs, digit_csv, tower):
    """Both towers; on a CNN, path (auto's next pick for a contrastive CNN tower) must reach the image tower
    itself, through the timm trunk's own drop-path slots, not only the text blocks."""
    model, tok, pre = _wrapper(configs[tower])
    family = find_family(model)
    if tower == "tiny-vit":
        assert len(family.blocks(model)) == 4  # 2 image + 2 text residual blocks
    else:
        assert drop_path_slots(model.clip.visual.trunk)
        for norm in model.clip.visual.trunk.modules():  # timm zero-inits each block's last norm: no update to drop
            if isinstance(norm, torch.nn.BatchNorm2d):
                torch.nn.init.uniform_(norm.weight, 0.5, 1.5)
    batch = torch.utils.data.default_collate([_dataset(digit_csv, tok, pre)[i] for i in range(8)])
    model.train()
    torch.manual_seed(0)
    clean = model(**batch)["logits"]
    image = model.clip.encode_image(batch["pixel_values"])
    for kind in ("drop", "path"):
        family.check(model, kind)
        with audit.recording() as seen, getattr(family, kind)(model, batch, 0.5) as sub:
            perturbed = model(**sub)["logits"]
            audit.verify(seen, kind, 0.5, model, family)  # each tower shows its trace
            perturbed_image = model.clip.encode_image(sub["pixel_values"])
        assert not torch.allclose(perturbed, clean, atol=1e-4), kind
        if kind == "path":
            assert not torch.allclose(perturbed_image, image, atol=1e-4)  # the image tower itself is perturbed
        assert torch.allclose(model(**batch)["logits"], clean, atol=1e-5), kind  # restored on exit
    attn = [m for m in model.modules() if isinstance(m, torch.nn.MultiheadAttention)]
    assert attn and all(m.dropout == 0.0 for m in attn)


def test_path_that_misses_the_image_tower_stops_before_a_step(configs, digit_csv, tmp_path):
    """test_efficientnet's blocks have no skip connection, so its drop-path slots never run: the text blocks
    alone would carry PathSub. The audit checks each tower apart and stops the run, naming the image tower."""
    model, tok, pre = _wrapper(configs["tiny-cnn"])
    before = {k: v.clone() for k, v in model.named_parameters()}
    trainer = MaskSubTrainer(model=model, args=make_args(tmp_path, masksub_type="path", max_steps=1),
                             train_dataset=_dataset(digit_csv, tok, pre))
    with pytest.raises(audit.PerturbationNotApplied, match="it never reached the image tower"):
        trainer.train()
    assert trainer.state.global_step == 0
    assert all(torch.equal(v, before[k]) for k, v in model.named_parameters())  # no optimizer step


@pytest.mark.parametrize("kind", ["drop", "path"])
def test_classify_mode_is_held_to_the_image_tower_alone(configs, digit_csv, tmp_path, kind):
    """Classify mode never runs the text tower, so drop and path are planned and verified on the image tower only
    (requiring the text tower stopped every DropSub classify run), while contrastive mode keeps both towers."""
    family = OpenCLIPFamily()
    (contrastive, tok, pre), classify = _wrapper(configs["tiny-resnet"]), _wrapper(configs["tiny-resnet"], "classify")[0]
    assert list(family.must_reach(contrastive, kind)) == ["the image tower", "the text tower"]
    assert list(family.must_reach(classify, kind)) == ["the image tower"]
    assert "text tower" not in family.describe(classify, kind, 0.1)
    trainer = MaskSubTrainer(model=classify, args=make_args(tmp_path, masksub_type=kind, masksub_ratio=0.3, max_steps=2),
                             train_dataset=_dataset(digit_csv, tok, pre, with_labels=True))
    trainer.train()
    assert trainer.state.global_step == 2
    assert any("loss_sub" in h for h in trainer.state.log_history)


# ---- acceptance 2: the relaxed contrastive loss ------------------------------------------------------
def test_relaxed_contrastive_loss_by_hand_and_zero_gradient_at_equality():
    import math

    sub_rows, main_rows = [[2.0, 0.0], [1.0, 1.0]], [[1.0, 0.0], [0.0, 3.0]]

    def soft_ce(target_rows, logit_rows):  # mean over rows of -sum softmax(target) * log_softmax(logits)
        total = 0.0
        for t, z in zip(target_rows, logit_rows):
            p = [math.exp(v) / sum(math.exp(u) for u in t) for v in t]
            log_z = math.log(sum(math.exp(u) for u in z))
            total -= sum(pi * (zi - log_z) for pi, zi in zip(p, z))
        return total / len(target_rows)

    columns = lambda m: [list(c) for c in zip(*m)]  # noqa: E731  (text->image rows)
    by_hand = (soft_ce(main_rows, sub_rows) + soft_ce(columns(main_rows), columns(sub_rows))) / 2
    sub = torch.tensor(sub_rows, requires_grad=True)
    loss = RELAXED_LOSSES["clip"](sub, torch.tensor(main_rows))
    assert loss.item() == pytest.approx(by_hand, abs=1e-6)
    loss.backward()
    assert sub.grad.abs().max() > 1e-3
    same = torch.tensor(main_rows, requires_grad=True)
    RELAXED_LOSSES["clip"](same, torch.tensor(main_rows)).backward()
    assert same.grad.abs().max() < 1e-7  # sub == main: nothing left to learn


# ---- acceptance 3: DDP equals one process on the same global batch ----------------------------------
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_matches_one_process(configs, digit_csv, tmp_path):
    from safetensors.torch import load_file

    script = str(Path(__file__).with_name("clip_ddp.py"))
    common = ["--", "--model", configs["tiny-vit"], "--train_data", str(digit_csv), "--max_steps", "3",
              "--optim", "sgd", "--learning_rate", "0.5", "--max_grad_norm", "0", "--lr_scheduler_type", "constant",
              "--warmup_steps", "0", "--train_sampling_strategy", "sequential", "--use_cpu", "--disable_tqdm", "true",
              "--seed", "0", "--masksub_type", "mask"]
    runs = {"one": [sys.executable, script, str(tmp_path / "one"), "8"],
            "two": [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                    "127.0.0.1", "--master_port", str(_free_port()), script, str(tmp_path / "two"), "4"]}
    for cmd in runs.values():
        done = subprocess.run(cmd + common, capture_output=True, text=True, timeout=300,
                              cwd=Path(__file__).parent.parent)
        assert done.returncode == 0, done.stderr[-3000:]
    one, two = (load_file(str(tmp_path / k / "open_clip" / "open_clip_model.safetensors")) for k in ("one", "two"))
    start = _wrapper(configs["tiny-vit"])[0].clip.state_dict()
    assert any(not torch.allclose(one[k], start[k]) for k in one)  # it trained
    for name in one:
        assert torch.allclose(one[name], two[name], atol=1e-5, rtol=1e-4), name
    logs = [json.loads((tmp_path / k / "trainer_state.json").read_text())["log_history"] for k in ("one", "two")]
    for a, b in zip(*logs):
        if "loss_sub" in a:
            assert a["loss_sub"] == pytest.approx(b["loss_sub"], abs=2e-4)


# ---- acceptance 5: bad input -----------------------------------------------------------------------
def test_missing_columns_are_named(configs, digit_csv, tmp_path):
    with pytest.raises(ValueError, match="no --csv_caption_key column 'caption'"):
        run_clip.main(_argv(configs["tiny-vit"], digit_csv, tmp_path, "--csv_caption_key", "caption"))
    with pytest.raises(ValueError, match="no --csv_img_key column 'image'"):
        run_clip.main(_argv(configs["tiny-vit"], digit_csv, tmp_path, "--csv_img_key", "image"))


def test_unreadable_images_are_counted_then_refused(digit_csv, tmp_path, capsys):
    header, *rows = digit_csv.read_text().splitlines()
    rows = [header] + [f"{digit_csv.parent / r}" for r in rows]  # absolute paths: the files live elsewhere
    (tmp_path / "broken.png").write_bytes(b"not an image")
    few = rows + [f"{tmp_path / 'broken.png'}\ta photo of a one.\tone"]
    (tmp_path / "few.tsv").write_text("\n".join(few) + "\n")
    pairs = data.csv_pairs(str(tmp_path / "few.tsv"), "filepath", "title", "\t", "label")
    assert len(pairs) == 96 and "skipped 1 of 97" in capsys.readouterr().out
    many = rows[:11] + [f"{tmp_path / 'missing'}{i}.png\tx\tone" for i in range(5)]
    (tmp_path / "many.tsv").write_text("\n".join(many) + "\n")
    with pytest.raises(ValueError, match="5 of 15 images cannot be read"):
        data.csv_pairs(str(tmp_path / "many.tsv"), "filepath", "title", "\t")


def test_unknown_model_and_impossible_ratio_are_clear_errors(digit_csv, configs, tmp_path):
    with pytest.raises(ValueError, match="--model 'ViT-Z-99' is unknown"):
        run_clip.main(_argv("ViT-Z-99", digit_csv, tmp_path / "a"))
    with pytest.raises(ValueError, match="masksub_ratio"):
        run_clip.main(_argv(configs["tiny-vit"], digit_csv, tmp_path / "b", "--masksub_ratio", "1.0"))
    model, tok, pre = _wrapper(configs["tiny-vit"])
    batch = torch.utils.data.default_collate([_dataset(digit_csv, tok, pre)[i] for i in range(2)])
    with pytest.raises(ValueError, match="leaves no token"):
        with find_family(model).mask(model, batch, 1.0):
            pass


def test_hf_dataset_with_image_and_text_columns(digits, tmp_path, configs):
    from datasets import Dataset
    from PIL import Image

    images, labels = digits
    rows = {"image": [Image.fromarray((np.kron(images[i], np.ones((4, 4))) * 255).astype(np.uint8)) for i in range(12)],
            "text": [f"a photo of a {DIGITS[labels[i]]}." for i in range(12)], "digit": [int(v) for v in labels[:12]]}
    Dataset.from_dict(rows).save_to_disk(str(tmp_path / "ds"))
    pairs = data.hf_pairs(str(tmp_path / "ds"), "train", "image", "text", "digit")
    assert len(pairs) == 12 and pairs.labels == [int(v) for v in labels[:12]]
    model, tok, pre = _wrapper(configs["tiny-vit"])
    row = data.ClipDataset(pairs, pre, tok)[0]
    assert row["pixel_values"].shape == (3, 32, 32) and row["input_ids"].shape == (16,)
    with pytest.raises(ValueError, match="no --caption_column column 'caption'"):
        data.hf_pairs(str(tmp_path / "ds"), "train", "image", "caption")
