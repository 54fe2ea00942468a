"""MaskSubTrainer against transformers.Trainer: the acceptance list of the core, one test each."""
import json
import math

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, DataCollatorWithPadding, Trainer, TimmWrapperConfig, \
    TimmWrapperForImageClassification

import masksub_hf.trainer as trainer_module
from masksub_hf import MaskSubTrainer
from masksub_hf.perturb import dropout_sites
from masksub_hf.wallclock import with_wallclock
from tests.helpers import args, fixed_scores, image_dataset, text_batch, text_dataset, tiny_bert, tiny_vit


def accuracy(pred):
    return {"accuracy": float((np.argmax(pred.predictions, -1) == pred.label_ids).mean())}


@pytest.fixture()
def tok(tiny_bert_dir):
    return AutoTokenizer.from_pretrained(tiny_bert_dir)


def _text_setup(tok, movie_reviews, n=32, **model_kw):
    return tiny_bert(vocab_size=len(tok), **model_kw), text_dataset(tok, movie_reviews, n), DataCollatorWithPadding(tok)


def _trained(cls, model, train, collator, tmp_path, **kw):
    trainer = cls(model=model, args=args(tmp_path, **kw), train_dataset=train, eval_dataset=train,
                  data_collator=collator, compute_metrics=accuracy)
    trainer.train()
    return trainer


# 1. masksub_type=none is Trainer ------------------------------------------------------------------
@pytest.mark.parametrize("family", ["bert", "vit"])
def test_none_is_exactly_trainer(family, tok, movie_reviews, digits, tmp_path):
    runs = []
    for cls in (Trainer, MaskSubTrainer):
        if family == "bert":
            model, data, collator = _text_setup(tok, movie_reviews, dropout=0.1)
        else:
            model, data, collator = tiny_vit(hidden_dropout_prob=0.1), image_dataset(digits), None
        runs.append(_trained(cls, model, data, collator, tmp_path / cls.__name__, masksub_type="none"))
    plain, ours = runs
    for (name, a), b in zip(plain.model.state_dict().items(), ours.model.state_dict().values()):
        assert torch.equal(a, b), name
    m_plain, m_ours = plain.evaluate(), ours.evaluate()
    assert m_plain["eval_loss"] == m_ours["eval_loss"] and m_plain["eval_accuracy"] == m_ours["eval_accuracy"]


# 3. two backward passes = one combined backward ---------------------------------------------------
@pytest.mark.parametrize("masksub_type", ["mask", "path", "drop"])
def test_two_backward_passes_give_the_combined_gradient(masksub_type, tok, movie_reviews, tmp_path, monkeypatch):
    fixed_scores(monkeypatch)
    model, _, _ = _text_setup(tok, movie_reviews)
    trainer = MaskSubTrainer(model=model, args=args(tmp_path, masksub_type=masksub_type))
    trainer.current_gradient_accumulation_steps = 1
    batch = text_batch(tok, movie_reviews)
    grads = []
    for combined in (False, True):
        model.zero_grad()
        torch.manual_seed(0)  # same drop / drop-path draws in both runs
        monkeypatch.setattr(trainer, "one_combined_backward", lambda: combined)
        trainer.training_step(model, dict(batch))
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)


# 4. gradient accumulation: 2 x B == 1 x 2B -----------------------------------------------------------
@pytest.mark.parametrize("family", ["bert", "vit"])
@pytest.mark.parametrize("masksub_type", ["mask"])
def test_gradient_accumulation_matches_the_large_batch(family, masksub_type, tok, movie_reviews, digits, tmp_path,
                                                       monkeypatch):
    fixed_scores(monkeypatch)
    finals = []
    for batch_size, accumulation in ((8, 1), (4, 2)):
        if family == "bert":
            model, data, collator = _text_setup(tok, movie_reviews, n=16)
        else:
            model, data, collator = tiny_vit(), image_dataset(digits, n=16), None
        # SGD, no clipping: the update is lr * gradient, so any scaling error shows in the weights
        trainer = MaskSubTrainer(model=model, train_dataset=data, data_collator=collator, args=args(
            tmp_path / f"{batch_size}", masksub_type=masksub_type, per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation, max_steps=2, optim="sgd", learning_rate=0.5,
            max_grad_norm=0.0, lr_scheduler_type="constant"))  # same seed: both see the same shuffled order
        trainer.train()
        finals.append(trainer.model.state_dict())
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        finals.append(losses)
    (w1, l1, w2, l2) = finals
    for name in w1:
        assert torch.allclose(w1[name], w2[name], atol=1e-5, rtol=1e-4), name
    assert np.allclose(l1, l2, rtol=1e-4)  # the logged loss is the same mean too


@pytest.mark.parametrize("family", ["bert", "vit"])
def test_none_is_trainer_bit_for_bit_with_accumulation_and_warns_where_trainer_scales_wrongly(
        family, tok, movie_reviews, digits, tmp_path, caplog):
    runs, warned = [], []
    for cls in (Trainer, MaskSubTrainer):
        if family == "bert":
            model, data, collator = _text_setup(tok, movie_reviews, n=16, dropout=0.1)
        else:
            model, data, collator = tiny_vit(hidden_dropout_prob=0.1), image_dataset(digits, n=16), None
        caplog.clear()
        with caplog.at_level("WARNING", logger="masksub_hf.trainer"):
            trainer = cls(model=model, train_dataset=data, data_collator=collator, args=args(
                tmp_path / cls.__name__, masksub_type="none", per_device_train_batch_size=4,
                gradient_accumulation_steps=2, max_steps=2))
        warned.append("2 (gradient_accumulation_steps) times" in caplog.text)
        trainer.train()
        runs.append(trainer)
    plain, ours = runs
    for (name, a), b in zip(plain.model.state_dict().items(), ours.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert [h.get("loss") for h in plain.state.log_history] == [h.get("loss") for h in ours.state.log_history]
    # BERT ignores num_items_in_batch (Trainer's loss is then 2x the mean); ViT divides by it
    assert warned == [False, family == "bert"]
    with caplog.at_level("WARNING", logger="masksub_hf.trainer"):
        caplog.clear()
        MaskSubTrainer(model=tiny_bert(), args=args(tmp_path / "ga1", masksub_type="none"))
    assert "quirk" not in caplog.text  # no accumulation, nothing to warn about


# 6. evaluation and prediction never run the sub-branch ----------------------------------------------
def test_eval_and_predict_run_one_forward_per_batch_and_match_trainer(tok, movie_reviews, tmp_path):
    model, data, collator = _text_setup(tok, movie_reviews, n=20)
    calls = []
    model.register_forward_pre_hook(lambda m, a: calls.append(1))
    ours = MaskSubTrainer(model=model, args=args(tmp_path), eval_dataset=data, data_collator=collator,
                          compute_metrics=accuracy)
    plain = Trainer(model=model, args=args(tmp_path), eval_dataset=data, data_collator=collator,
                    compute_metrics=accuracy)
    m_ours = ours.evaluate()
    assert len(calls) == math.ceil(20 / 8)
    m_plain = plain.evaluate()
    assert (m_ours["eval_loss"], m_ours["eval_accuracy"]) == (m_plain["eval_loss"], m_plain["eval_accuracy"])
    calls.clear()
    p_ours = ours.predict(data)
    assert len(calls) == math.ceil(20 / 8)
    assert np.array_equal(p_ours.predictions, plain.predict(data).predictions)


# 7. loss_main and loss_sub reach trainer_state.json ------------------------------------------------
def test_branch_losses_are_logged_and_the_sub_loss_starts_at_the_main_entropy(tok, movie_reviews, tmp_path):
    model, data, collator = _text_setup(tok, movie_reviews, n=8)
    with torch.no_grad():
        logits = model.train()(**collator([{k: v for k, v in r.items()} for r in data])).logits
    p = logits.softmax(-1)
    entropy = float(-(p * p.log()).sum(-1).mean())
    trainer = _trained(MaskSubTrainer, model, data, collator, tmp_path, max_steps=3, eval_strategy="steps",
                       eval_steps=2)
    trainer.save_state()
    history = json.loads((tmp_path / "trainer_state.json").read_text())["log_history"]
    train_logs = [h for h in history if "loss" in h]
    assert len(train_logs) == 3 and any("eval_loss" in h for h in history)
    for h in train_logs:
        assert {"loss_main", "loss_sub"} <= set(h) and "elapsed_s" not in h  # the clock is kept beside the logs
        assert h["loss"] == pytest.approx((h["loss_main"] + h["loss_sub"]) / 2, abs=1e-3)
    clock = json.loads((tmp_path / "wallclock.json").read_text())
    assert [e["step"] for e in clock] == [h["step"] for h in history]  # one entry per log call, evals included
    assert all(a["elapsed_s"] <= b["elapsed_s"] for a, b in zip(clock, clock[1:]))
    merged = with_wallclock(history, str(tmp_path))
    assert all(m["elapsed_s"] > 0 for m in merged)  # eval logs too: plots against wall-clock
    evaluated = trainer.evaluate()
    assert "elapsed_s" not in evaluated and json.loads((tmp_path / "wallclock.json").read_text()) == clock
    first = train_logs[0]
    assert entropy - 1e-3 <= first["loss_sub"] <= entropy + 0.1  # soft CE = H(main) + KL >= H(main)
    assert first["loss_main"] == pytest.approx(math.log(3), abs=0.3)  # 3 classes, untrained


# 8. drop and path touch only the sub-branch ---------------------------------------------------------
def _timm_vit():
    torch.manual_seed(0)
    return TimmWrapperForImageClassification(TimmWrapperConfig(
        architecture="vit_tiny_patch16_224", num_labels=10,
        model_args=dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, in_chans=1)))


def _hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("masksub_type", ["drop", "path", "mask"])
@pytest.mark.parametrize("make", [tiny_vit, _timm_vit])
def test_perturbation_reaches_only_the_sub_branch_and_leaves_nothing_behind(make, masksub_type, digits, tmp_path):
    model = make()
    trainer = MaskSubTrainer(model=model, args=args(tmp_path, masksub_type=masksub_type))
    trainer.current_gradient_accumulation_steps = 1
    batch = image_dataset(digits, n=8)[:8]
    model.train()
    with torch.no_grad():
        clean = model(pixel_values=batch["pixel_values"]).logits
    outputs = []
    handle = model.register_forward_hook(lambda m, a, out: outputs.append(out.logits.detach()))
    rates = [(m, a, getattr(m, a)) for m, a in dropout_sites(model)]
    children = {n: c for n, c in model.named_modules()}
    hooks_before = _hooks(model)
    trainer.training_step(model, dict(batch))
    handle.remove()
    main, sub = outputs
    assert torch.allclose(main, clean, atol=1e-6)  # main branch: exactly the unperturbed model
    assert not torch.allclose(sub, clean, atol=1e-3)  # sub-branch: really perturbed
    assert all(getattr(m, a) == v for m, a, v in rates)
    assert {n: c for n, c in model.named_modules()} == children  # swapped modules are back
    assert _hooks(model) == hooks_before - 1


# 9. bf16 on CPU, relaxed loss in fp32 -----------------------------------------------------------------
def test_bf16_trains_and_the_relaxed_loss_is_fp32(tok, movie_reviews, tmp_path, monkeypatch):
    seen = []
    real = trainer_module.RELAXED_LOSSES["softmax"]

    def spy(sub, main):
        out = real(sub, main)
        seen.append((sub.dtype, out.dtype))
        return out

    monkeypatch.setitem(trainer_module.RELAXED_LOSSES, "softmax", spy)
    model, data, collator = _text_setup(tok, movie_reviews, n=16)
    trainer = _trained(MaskSubTrainer, model, data, collator, tmp_path, bf16=True, max_steps=2)
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(seen) == 2 and all(out == torch.float32 for _, out in seen)
    assert all(math.isfinite(h["loss_main"]) and math.isfinite(h["loss_sub"]) for h in logs)


# checkpoints resume: the random masks replay too (Trainer restores the RNG state) ---------------------
@pytest.mark.parametrize("family", ["bert", "vit"])
def test_resuming_from_a_checkpoint_ends_where_the_uninterrupted_run_ended(family, tok, movie_reviews, digits,
                                                                            tmp_path):
    kw = dict(max_steps=4, save_strategy="steps", save_steps=2)
    runs = []
    for resume in (None, str(tmp_path / "checkpoint-2")):
        if family == "bert":
            model, data, collator = _text_setup(tok, movie_reviews, n=32, dropout=0.1)
        else:  # ViT's saved tensor names differ from its module names: Trainer alone would lose them
            model, data, collator = tiny_vit(hidden_dropout_prob=0.1), image_dataset(digits), None
        trainer = MaskSubTrainer(model=model, args=args(tmp_path, **kw), train_dataset=data, data_collator=collator)
        trainer.train(resume_from_checkpoint=resume)
        runs.append(trainer.model.state_dict())
    for name, w in runs[0].items():
        assert torch.allclose(w, runs[1][name], atol=1e-6), name


def test_load_best_model_at_end_restores_every_vit_weight(digits, tmp_path):
    data = image_dataset(digits)
    trainer = MaskSubTrainer(model=tiny_vit(), train_dataset=data, eval_dataset=data, args=args(
        tmp_path, max_steps=4, save_strategy="steps", save_steps=2, eval_strategy="steps", eval_steps=2,
        load_best_model_at_end=True, metric_for_best_model="eval_loss", greater_is_better=True))
    trainer.train()
    # "best" = highest loss: the earlier checkpoint, so its weights differ from the last step's
    assert trainer.state.best_model_checkpoint.endswith("checkpoint-2")
    best = type(trainer.model).from_pretrained(trainer.state.best_model_checkpoint)
    for name, w in best.state_dict().items():
        assert torch.equal(trainer.model.state_dict()[name], w), name


@pytest.mark.parametrize("masksub_type", ["mask", "drop", "path"])
def test_batchnorm_running_statistics_follow_the_main_branch_only(masksub_type, digits, tmp_path):
    torch.manual_seed(0)
    model = TimmWrapperForImageClassification(TimmWrapperConfig(
        architecture="resnet18", num_labels=10, model_args=dict(in_chans=1)))
    trainer = MaskSubTrainer(model=model, args=args(tmp_path, masksub_type=masksub_type))
    trainer.current_gradient_accumulation_steps = 1
    x = torch.tensor(digits[0][:8]).repeat_interleave(4, 1).repeat_interleave(4, 2)[:, None]  # 32 px
    stats = lambda: [b.clone() for n, b in model.named_buffers() if "running" in n]  # noqa: E731
    before = stats()
    model.train()
    with torch.no_grad():
        model(pixel_values=x)  # what the main branch alone does to the statistics
    expected = stats()
    for b, s in zip([b for n, b in model.named_buffers() if "running" in n], before):
        b.copy_(s)
    trainer.training_step(model, {"pixel_values": x, "labels": torch.tensor(digits[1][:8])})
    assert any(not torch.equal(a, b) for a, b in zip(expected, before))  # the main branch did move them
    for a, b in zip(stats(), expected):
        assert torch.allclose(a, b, atol=1e-6)


def test_a_second_train_call_logs_only_its_own_steps(digits, tmp_path):
    """The branch-loss window of a first train() that ended between two logs must not leak into the second."""
    trainer = MaskSubTrainer(model=tiny_vit(), train_dataset=image_dataset(digits),
                             args=args(tmp_path, max_steps=3, logging_steps=2))
    windows, log = [], trainer.log

    def spy(logs, *a, **k):
        if "loss" in logs:
            windows.append(trainer._branch_sums["loss_main"][1])  # micro-batches in this window
        return log(logs, *a, **k)

    trainer.log = spy
    trainer.train()
    assert trainer._branch_sums["loss_main"][1] == 1  # step 3 was never logged
    trainer.train()
    assert windows == [2, 2]
