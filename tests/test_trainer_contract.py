"""The Trainer contract under MaskSub: user compute_loss overrides train, gradient checkpointing stays right."""
import pytest
import torch
from transformers import AutoTokenizer, DataCollatorWithPadding

from masksub_hf import MaskSubTrainer
from tests.helpers import args, fixed_scores, image_dataset, text_batch, text_dataset, tiny_bert, tiny_vit


@pytest.fixture()
def tok(tiny_bert_dir):
    return AutoTokenizer.from_pretrained(tiny_bert_dir)


def test_a_compute_loss_override_is_the_main_branch_in_training(tok, movie_reviews, tmp_path):
    class Weighted(MaskSubTrainer):
        calls = []

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, outputs = super().compute_loss(model, inputs, return_outputs=True)
            loss = loss * 1.5 + 0.25  # a customised loss, visibly different from the model's own
            if model.training:
                self.calls.append(float(loss.detach()))
            return (loss, outputs) if return_outputs else loss

    model = tiny_bert(vocab_size=len(tok))
    trainer = Weighted(model=model, args=args(tmp_path, max_steps=3), train_dataset=text_dataset(tok, movie_reviews, 24),
                       data_collator=DataCollatorWithPadding(tok))
    trainer.train()
    logged = [h["loss_main"] for h in trainer.state.log_history if "loss_main" in h]
    assert len(Weighted.calls) == 3  # once per main branch, never for the sub-branch
    assert logged == pytest.approx(Weighted.calls, abs=1e-4)


def _forwards(model):
    calls = []
    model.register_forward_hook(lambda m, a, out: calls.append(out))
    return calls


def test_the_main_prediction_comes_from_the_loss_forward_even_when_the_override_returns_only_the_loss(
        tok, movie_reviews, tmp_path):
    class LossOnly(MaskSubTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return super().compute_loss(model, inputs)  # drops the outputs whatever it is asked

    model = tiny_bert(vocab_size=len(tok))
    trainer = LossOnly(model=model, args=args(tmp_path))
    trainer.current_gradient_accumulation_steps = 1
    calls = _forwards(model)
    seen = []
    original = trainer.relaxed_loss
    trainer.relaxed_loss = lambda m, out, sub, inputs, target: seen.append(target) or original(m, out, sub, inputs, target)
    trainer.training_step(trainer.model, text_batch(tok, movie_reviews))
    assert len(calls) == 2  # the main forward and the sub-branch's: no third one for the outputs
    assert torch.equal(seen[0], calls[0].logits.detach())


def test_an_override_that_never_calls_the_model_or_calls_it_twice_is_refused_with_the_fix(tok, movie_reviews,
                                                                                          tmp_path):
    class NoCall(MaskSubTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return model.forward(**inputs).loss  # bypasses model(...): nothing to listen to

    class Twice(MaskSubTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return model(**inputs).loss + model(**inputs).loss

    for cls, message in ((NoCall, "did not call the model"), (Twice, "2 times with gradients")):
        trainer = cls(model=tiny_bert(vocab_size=len(tok)), args=args(tmp_path))
        trainer.current_gradient_accumulation_steps = 1
        with pytest.raises(ValueError, match=message):
            trainer.training_step(trainer.model, text_batch(tok, movie_reviews))


def _gradients(trainer, model, batch, checkpointing, reentrant):
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
    else:
        model.gradient_checkpointing_disable()
    model.zero_grad()
    torch.manual_seed(0)  # same dropout / drop-path / mask draws
    trainer.training_step(model, dict(batch))
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("reentrant", [False, True])
@pytest.mark.parametrize("masksub_type", ["mask", "drop", "path"])
@pytest.mark.parametrize("family", ["bert", "vit"])
def test_gradient_checkpointing_gives_the_same_gradients(family, masksub_type, reentrant, tok, movie_reviews, digits,
                                                          tmp_path, monkeypatch):
    """Checkpointed layers are recomputed in the backward pass: the sub-branch perturbation must still be in force."""
    fixed_scores(monkeypatch)
    if family == "bert":
        model, batch = tiny_bert(vocab_size=len(tok), dropout=0.1), text_batch(tok, movie_reviews)
    else:
        model, batch = tiny_vit(hidden_dropout_prob=0.1), image_dataset(digits, n=8)[:8]
    trainer = MaskSubTrainer(model=model, args=args(tmp_path, masksub_type=masksub_type))
    trainer.current_gradient_accumulation_steps = 1
    plain = _gradients(trainer, model, batch, False, reentrant)
    checkpointed = _gradients(trainer, model, batch, True, reentrant)
    assert len(plain) == len(checkpointed) == len(list(model.parameters()))
    for a, b in zip(plain, checkpointed):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)
