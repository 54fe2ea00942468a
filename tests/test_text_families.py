"""Text models x mask/drop/path: each cell perturbs verifiably or is refused when the trainer is built.

Tiny random configs (hidden 32, 2 layers, vocab 1000) on real movie sentences with real padding
(right-padded for encoders, left-padded for decoders). Masking is checked against a reference that
never drops anything: the full sequence with the dropped tokens hidden by the attention mask, whose
kept tokens sit at their own columns and positions. The sub-branch must compute the same.
"""
import logging
import sys

import pytest
import torch
import transformers as T
from torch import nn
from transformers import AutoTokenizer, DataCollatorWithPadding

from masksub_hf import MaskSubTrainer, find_family
from masksub_hf.models.base import GenericFamily, layer_stack
from masksub_hf.models.hf_text import DecoderTextFamily, MaskTokenTextFamily, TextEncoderFamily
from masksub_hf.perturb import dropout_sites
from tests.helpers import args, text_dataset

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=1000,
             pad_token_id=0, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
DECODER = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, intermediate_size=64,
               vocab_size=1000, pad_token_id=0, bos_token_id=2, eos_token_id=3, max_position_embeddings=128)
V3 = dict(relative_attention=True, position_biased_input=False, pos_att_type=["p2c", "c2p"], max_relative_positions=-1,
          position_buckets=256, norm_rel_ebd="layer_norm", share_att_key=True, type_vocab_size=0)  # as released


def _build(cls, config):
    torch.manual_seed(0)
    return cls(config).eval()


MODELS = {
    "bert": lambda: _build(T.BertForSequenceClassification, T.BertConfig(**SMALL)),
    "roberta": lambda: _build(T.RobertaForSequenceClassification,
                              T.RobertaConfig(**SMALL, max_position_embeddings=130)),
    "distilbert": lambda: _build(T.DistilBertForSequenceClassification, T.DistilBertConfig(
        vocab_size=1000, dim=32, n_layers=2, n_heads=2, hidden_dim=64, pad_token_id=0, dropout=0.0,
        attention_dropout=0.0, seq_classif_dropout=0.0)),
    "albert": lambda: _build(T.AlbertForSequenceClassification, T.AlbertConfig(
        **SMALL, embedding_size=16, classifier_dropout_prob=0.0)),
    "electra": lambda: _build(T.ElectraForSequenceClassification, T.ElectraConfig(**SMALL, embedding_size=16)),
    "xlm-roberta": lambda: _build(T.XLMRobertaForSequenceClassification,
                                  T.XLMRobertaConfig(**SMALL, max_position_embeddings=130)),
    "mpnet": lambda: _build(T.MPNetForSequenceClassification, T.MPNetConfig(**SMALL, max_position_embeddings=130)),
    "deberta-v2": lambda: _build(T.DebertaV2ForSequenceClassification, T.DebertaV2Config(**SMALL, pooler_dropout=0.0)),
    "deberta-v3": lambda: _build(T.DebertaV2ForSequenceClassification,
                                 T.DebertaV2Config(**SMALL, **V3, pooler_dropout=0.0)),
    "modernbert": lambda: _build(T.ModernBertForSequenceClassification, T.ModernBertConfig(
        vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        pad_token_id=0, bos_token_id=2, eos_token_id=3, cls_token_id=2, sep_token_id=3)),
    "gpt2": lambda: _build(T.GPT2ForSequenceClassification, T.GPT2Config(
        vocab_size=1000, n_embd=32, n_layer=2, n_head=2, n_positions=128, pad_token_id=0, bos_token_id=2,
        eos_token_id=3, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)),
    "llama": lambda: _build(T.LlamaForSequenceClassification, T.LlamaConfig(**DECODER)),
    "qwen2": lambda: _build(T.Qwen2ForSequenceClassification, T.Qwen2Config(**DECODER)),
    "mistral": lambda: _build(T.MistralForSequenceClassification, T.MistralConfig(**DECODER, head_dim=16)),
    "gemma": lambda: _build(T.GemmaForSequenceClassification, T.GemmaConfig(**DECODER, head_dim=16)),
    "token-classifier (deberta-v3)": lambda: _build(T.DebertaV2ForTokenClassification,
                                                    T.DebertaV2Config(**SMALL, **V3, num_labels=5)),
    "multiple-choice (roberta)": lambda: _build(T.RobertaForMultipleChoice,
                                                T.RobertaConfig(**SMALL, max_position_embeddings=130)),
    # the refusals and the mask-token fallback
    "gpt2 without pad_token_id": lambda: _build(T.GPT2ForSequenceClassification, T.GPT2Config(
        vocab_size=1000, n_embd=32, n_layer=2, n_head=2, n_positions=128, bos_token_id=2, eos_token_id=3,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)),
    "bart (mask token)": lambda: _bart(mask_token_id=4),
    "bart without mask token": lambda: _bart(),
}


def _bart(**kw):
    config = T.BartConfig(vocab_size=1000, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                          decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                          max_position_embeddings=128,
                          pad_token_id=0, bos_token_id=2, eos_token_id=3, decoder_start_token_id=3, dropout=0.0,
                          attention_dropout=0.0, activation_dropout=0.0, classifier_dropout=0.0, **kw)
    return _build(T.BartForSequenceClassification, config)


def test_keep_indices_keeps_the_named_tokens_wherever_they_are():
    from masksub_hf.perturb import keep_indices
    from masksub_hf.perturb.text_tokens import first_real, last_real

    valid = torch.tensor([[0] * 6 + [1] * 10, [1] * 16, [0] * 13 + [1] * 3]).bool()  # left padding
    assert first_real(valid).nonzero()[:, 1].tolist() == [6, 0, 13]
    assert last_real(valid).nonzero()[:, 1].tolist() == [15, 15, 15]
    for _ in range(20):
        index, kept = keep_indices(valid, 0.5, always=last_real(valid))
        assert kept.sum(1).tolist() == [1 + 9 - 4, 1 + 15 - 7, 1 + 2 - 1]
        assert valid.gather(1, index)[kept].all()  # padding never kept
        assert all(15 in row[k].tolist() for row, k in zip(index, kept))  # the last real token always


# what each cell must do: a family that perturbs, or a construction-time refusal naming the reason
EXPECTED_FAMILY = {name: TextEncoderFamily for name in MODELS}
EXPECTED_FAMILY.update({"gpt2": DecoderTextFamily, "llama": DecoderTextFamily, "qwen2": DecoderTextFamily,
                        "mistral": DecoderTextFamily, "gemma": DecoderTextFamily,
                        "gpt2 without pad_token_id": DecoderTextFamily, "bart (mask token)": MaskTokenTextFamily,
                        "bart without mask token": MaskTokenTextFamily})
REFUSED = {("gpt2 without pad_token_id", "mask"): "config.pad_token_id is not set",
           ("bart without mask token", "mask"): "no mask token id is known"}
DECODERS = {"gpt2", "llama", "qwen2", "mistral", "gemma", "gpt2 without pad_token_id"}


@pytest.fixture(scope="module")
def tok(tiny_bert_dir):
    return AutoTokenizer.from_pretrained(tiny_bert_dir)


def _batch(tok, reviews, name, n=6):
    """Real sentences, padded: to the right for encoders, to the left for decoders; pairs of choices for
    multiple choice (B, 2, L). A decoder classifier without pad_token_id takes one sentence at a time."""
    n = 1 if name == "gpt2 without pad_token_id" else n
    texts = [t for t, _ in reviews[:n]]
    tok.padding_side = "left" if name in DECODERS else "right"
    try:
        if name.startswith("multiple-choice"):
            enc = tok([t for t in texts for _ in range(2)], [t for t in texts[::-1] for _ in range(2)], truncation=True,
                      max_length=24, padding=True, return_tensors="pt")
            return {k: v.view(n, 2, -1) for k, v in enc.items()}
        enc = dict(tok(texts, truncation=True, max_length=20, padding=True, return_tensors="pt"))
    finally:
        tok.padding_side = "right"
    if name not in ("bert", "albert", "electra", "deberta-v2"):  # the others take no sentence-pair token types
        enc.pop("token_type_ids", None)
    return enc


def _hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}, [getattr(m, a) for m, a in dropout_sites(model)]


def _masked_full_reference(model, batch, sub):
    """The full batch with only the kept tokens visible: same columns, same positions, nothing dropped."""
    lead = batch["input_ids"].shape[:-1]
    length = batch["input_ids"].shape[-1]
    visible = torch.zeros(batch["input_ids"].reshape(-1, length).shape, dtype=torch.long)
    visible.scatter_(1, sub.index, sub.kept.long())
    return model(**{**batch, "attention_mask": visible.reshape(*lead, length)}, output_hidden_states=True)


def _first_block_tokens(model, run):
    seen = []
    handle = layer_stack(model)[0].register_forward_pre_hook(
        lambda m, a, kw: seen.append((a[0] if a else kw["hidden_states"]).shape[1]), with_kwargs=True)
    try:
        run()
    finally:
        handle.remove()
    return seen[0]


QK = ("query", "key", "q_lin", "k_lin", "q", "k", "c_attn", "q_proj", "k_proj", "Wqkv", "query_proj", "key_proj")


def _sharpen_attention(model, factor=20.0):
    """Random attention is near uniform, where positions hardly matter; sharpen it so that they visibly do."""
    with torch.no_grad():
        for module_name, module in model.named_modules():
            if module_name.rsplit(".", 1)[-1] in QK and hasattr(module, "weight"):
                module.weight.mul_(factor)


def _verify_mask(name, model, batch):
    family = find_family(model)
    ids = batch["input_ids"].reshape(-1, batch["input_ids"].shape[-1])
    valid = batch["attention_mask"].reshape(ids.shape).bool()
    words, outputs = [], []
    handle = model.register_forward_pre_hook(lambda m, a, kw: words.append(kw["input_ids"].clone()), with_kwargs=True)
    with torch.no_grad(), family.mask(model, batch, 0.5) as sub:
        tokens_in = _first_block_tokens(model, lambda: outputs.append(model(**sub, output_hidden_states=True)))
    handle.remove()
    received = words[0].reshape(-1, words[0].shape[-1])
    real = valid.sum(1)
    if family.mask_kind(model) != "tokens dropped":  # mask token in place: same length, specials kept
        mask_id = family.mask_token_id(model)
        replaced = received.eq(mask_id) & ~ids.eq(mask_id)
        assert received.shape == ids.shape and torch.equal(received[~replaced], ids[~replaced])
        protected = ids.eq(3) | ids.eq(2) | ids.eq(0) | ~valid  # </s>, <s>, padding (first and last real: <s>, </s>)
        assert not replaced[protected].any()
        assert replaced.sum(1).tolist() == ((~protected).sum(1) * 0.5).floor().long().tolist()
        return
    index, kept = sub.index, sub.kept
    # fewer tokens reach the first layer: each row keeps its always-kept token and half of the others
    assert tokens_in == received.shape[1] == index.shape[1] < ids.shape[1]
    assert kept.sum(1).tolist() == (real - ((real - 1) * 0.5).floor().long()).tolist()
    assert torch.equal(received[kept], ids.gather(1, index)[kept])  # the kept tokens, in original order
    assert valid.gather(1, index)[kept].all() and (index.diff(dim=1)[kept[:, 1:]] > 0).all()
    if name in DECODERS:  # the token the classifier pools: the rightmost non-pad one, left padding
        pooled = ids.shape[1] - 1 - (ids != model.config.pad_token_id).flip(1).int().argmax(1)
        assert (pooled == ids.shape[1] - 1).all() and (index == pooled[:, None]).any(1).all()
    else:  # [CLS]
        assert (index[:, 0] == 0).all()
    # the kept tokens had their original positions: the same as the full batch with the others hidden
    with torch.no_grad():
        reference = _masked_full_reference(model, batch, sub)
    sub_logits, reference_logits = outputs[0].logits, reference.logits
    if reference_logits.dim() == 3:  # per-token logits: compare at the kept tokens' original columns
        reference_logits = _at(reference_logits, index)[kept]
        sub_logits = sub_logits[kept]
    assert torch.allclose(sub_logits, reference_logits, atol=1e-4), (sub_logits - reference_logits).abs().max()
    hidden, reference_hidden = outputs[0].hidden_states[-1], _at(reference.hidden_states[-1], index)
    assert torch.allclose(hidden[kept], reference_hidden[kept], atol=1e-4), \
        (hidden[kept] - reference_hidden[kept]).abs().max()


def _at(x, index):
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))


def _verify_sub_differs(model, batch, masksub_type):
    family = find_family(model)
    model.train()
    before, sites = _state(model)
    torch.manual_seed(1)
    with torch.no_grad():
        main = model(**batch).logits
        with getattr(family, masksub_type)(model, batch, 0.5) as sub:
            perturbed = model(**sub).logits
        again = model(**batch).logits
    # same weights, same input: the sub-branch differs (the main branch repeats bit for bit, so any difference is
    # the perturbation; a tiny random head can make it small)
    assert torch.equal(again, main) and (perturbed - main).abs().max() > 1e-6
    after, sites_after = _state(model)
    assert sites_after == sites and all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("masksub_type", ["mask", "drop", "path"])
@pytest.mark.parametrize("name", list(MODELS))
def test_every_text_model_perturbs_or_is_refused_at_construction(name, masksub_type, tok, movie_reviews, tmp_path):
    model = MODELS[name]()
    family = find_family(model)
    assert isinstance(family, EXPECTED_FAMILY[name]) and not isinstance(family, GenericFamily)
    if (name, masksub_type) in REFUSED:
        with pytest.raises(ValueError, match=REFUSED[name, masksub_type]) as err:
            MaskSubTrainer(model=model, args=args(tmp_path, masksub_type=masksub_type))
        assert type(model).__name__ in str(err.value) and "drop or path works" in str(err.value)
        return
    MaskSubTrainer(model=model, args=args(tmp_path, masksub_type=masksub_type))  # built without complaint
    plan = {"mask": "MaskSub", "drop": "DropSub", "path": "PathSub"}[masksub_type]
    assert family.describe(model, masksub_type).startswith(plan)
    batch = _batch(tok, movie_reviews, name)
    with torch.no_grad():
        model(**batch, output_hidden_states=True)  # transformers keeps hooks of its own to record hidden states
    hooks = _hook_count(model)
    if masksub_type == "mask":
        _sharpen_attention(model)
        _verify_mask(name, model, batch)
    else:
        _verify_sub_differs(model, batch, masksub_type)
    assert _hook_count(model) == hooks  # nothing of ours left behind


# 2. each position scheme: the sub-branch computes what the kept tokens compute alone at their original positions
SCHEME_CASES = {  # case: (model, padding side)
    "absolute (bert)": ("bert", "right"),
    "absolute, numbered from padding_idx (roberta)": ("roberta", "right"),
    "absolute through a hook on the table (bert without a position_ids argument)": ("bert", "right"),
    "learned, position_ids (gpt2, left padding)": ("gpt2", "left"),
    "learned, position_ids (gpt2, right padding)": ("gpt2", "right"),
    "rotary (llama, left padding)": ("llama", "left"),
    "rotary (qwen2, right padding)": ("qwen2", "right"),
    "rotary (mistral, left padding)": ("mistral", "left"),
    "rotary (gemma, left padding)": ("gemma", "left"),
    "rotary (modernbert)": ("modernbert", "right"),
    "relative (deberta-v3 as released)": ("deberta-v3", "right"),
    "relative, log buckets (deberta-v3, 8 buckets)": ("deberta-v3", "right"),
}


def _padded(tok, reviews, side, n=6, max_length=24):
    tok.padding_side = side
    try:
        enc = dict(tok([t for t, _ in reviews[:n]], truncation=True, max_length=max_length, padding=True,
                       return_tensors="pt"))
    finally:
        tok.padding_side = "right"
    return enc


def _deberta_hand_made_relative_pos(model, columns):
    """The original query-minus-key distances of the kept columns, bucketed as DeBERTa-v2 buckets them (2-D)."""
    encoder = model.deberta.encoder
    rel = columns[:, None] - columns[None, :]
    if encoder.position_buckets > 0:
        rel = sys.modules[type(encoder).__module__].make_log_bucket_position(
            rel, encoder.position_buckets, encoder.max_relative_positions)
    return rel.long()


@pytest.mark.parametrize("case", list(SCHEME_CASES))
def test_sub_branch_equals_the_kept_tokens_at_their_original_positions(case, tok, movie_reviews, monkeypatch):
    name, side = SCHEME_CASES[case]
    model = MODELS[name]()
    if "8 buckets" in case:
        torch.manual_seed(0)
        model = T.DebertaV2ForSequenceClassification(T.DebertaV2Config(
            **SMALL, **{**V3, "position_buckets": 8, "max_relative_positions": 32}, pooler_dropout=0.0)).eval()
    if "hook" in case:
        import masksub_hf.models.text_positions as positions

        monkeypatch.setattr(positions, "accepts", lambda model, arg: arg != "position_ids")
    _sharpen_attention(model)
    batch = _padded(tok, movie_reviews, side)
    if name != "bert":
        batch.pop("token_type_ids")
    family = find_family(model)
    full_positions = family.original_positions(model, batch)
    model(**batch, output_hidden_states=True)  # transformers keeps hooks of its own to record hidden states
    hooks = _hook_count(model)
    with torch.no_grad(), family.mask(model, batch, 0.5) as sub:
        out = model(**sub, output_hidden_states=True)
        if "hook" in case:
            assert "position_ids" not in sub and model.bert.embeddings.position_embeddings._forward_pre_hooks
    assert _hook_count(model) == hooks  # nothing of ours left behind
    logits, hidden = out.logits, out.hidden_states[-1]
    relative = name.startswith("deberta")
    for b in range(batch["input_ids"].shape[0]):
        cols = sub.index[b][sub.kept[b]]
        alone = {"input_ids": batch["input_ids"][b, cols][None], "output_hidden_states": True}  # no padding
        if "token_type_ids" in batch:
            alone["token_type_ids"] = batch["token_type_ids"][b, cols][None]
        with torch.no_grad():
            naive = model(**alone).hidden_states[-1][0]  # the kept tokens renumbered from 0: what must not happen
            if relative:  # the original distance matrix, built by hand, through the encoder's relative_pos
                rel = _deberta_hand_made_relative_pos(model, cols)
                handle = model.deberta.encoder.register_forward_pre_hook(
                    lambda m, a, kw: (a, {**kw, "relative_pos": rel}), with_kwargs=True)
                reference = model(**alone)
                handle.remove()
            else:  # explicit original position ids
                reference = model(**alone, position_ids=full_positions[b, cols][None])
        assert torch.allclose(logits[b], reference.logits[0], atol=1e-5)
        kept_hidden, ref_hidden = hidden[b, : len(cols)], reference.hidden_states[-1][0]
        assert torch.allclose(kept_hidden, ref_hidden, atol=1e-4), (case, b, (kept_hidden - ref_hidden).abs().max())
        if cols[-1] - cols[0] + 1 > len(cols) or cols[0] > 0:  # positions really moved: the test can tell
            assert (naive - ref_hidden).abs().max() > 1e-2


# token classification: the relaxed loss pairs the kept, labelled tokens with the main prediction there
TOKEN_CLASSIFIERS = {
    "absolute (bert)": (lambda: _build(T.BertForTokenClassification, T.BertConfig(**SMALL, num_labels=5)), "right"),
    "rotary (llama, left padding)": (lambda: _build(T.LlamaForTokenClassification, T.LlamaConfig(
        **DECODER, num_labels=5, classifier_dropout=0.0)), "left"),
    "relative (deberta-v3)": (MODELS["token-classifier (deberta-v3)"], "right"),
}


@pytest.mark.parametrize("case", list(TOKEN_CLASSIFIERS))
def test_token_classifier_pairs_kept_labelled_tokens_with_the_main_prediction_there(case, tok, movie_reviews):
    make, side = TOKEN_CLASSIFIERS[case]
    model = make()
    batch = _padded(tok, movie_reviews, side)
    if "bert" not in case or "deberta" in case:
        batch.pop("token_type_ids")
    ids = batch["input_ids"]
    special = ids.eq(tok.cls_token_id) | ids.eq(tok.sep_token_id) | ~batch["attention_mask"].bool()
    labels = torch.randint(0, 5, ids.shape, generator=torch.Generator().manual_seed(0)).masked_fill(special, -100)
    family = find_family(model)
    with torch.no_grad():
        main = model(**batch).logits
        with family.mask(model, batch, 0.5) as sub:
            sub_logits = model(**sub).logits
        reference = _masked_full_reference(model, batch, sub).logits  # per-token logits of the kept tokens, in place
    inputs = {**batch, "labels": labels}
    sub_pred, main_pred = family.pair(sub_logits, main, sub, inputs)
    rows, cols = [], []
    for b in range(ids.shape[0]):
        for k in range(sub.index.shape[1]):
            col = int(sub.index[b, k])
            if sub.kept[b, k] and labels[b, col] != -100:
                rows.append(b)
                cols.append(col)
    assert len(rows) == sub_pred.shape[0] == main_pred.shape[0] > 0  # kept and labelled: no special, no padding
    assert len(rows) < int(labels.ne(-100).sum())  # dropped tokens are not paired
    assert torch.equal(main_pred, main[rows, cols])
    assert torch.allclose(sub_pred, reference[rows, cols], atol=1e-5)


def test_multiple_choice_masks_each_choice_and_predicts_per_choice(tok, movie_reviews):
    model = MODELS["multiple-choice (roberta)"]()
    batch = _batch(tok, movie_reviews, "multiple-choice (roberta)")
    with torch.no_grad(), find_family(model).mask(model, batch, 0.5) as sub:
        logits = model(**sub).logits
    B, C, L = batch["input_ids"].shape
    assert sub["input_ids"].shape[:2] == (B, C) and sub["input_ids"].shape[2] < L
    assert sub["position_ids"].shape == sub["input_ids"].shape and logits.shape == (B, C)
    real = batch["attention_mask"].sum(-1)
    assert sub["attention_mask"].sum(-1).tolist() == (real - ((real - 1) * 0.5).floor().long()).tolist()
    chosen = [tuple(row) for row in sub.index[sub.kept.any(1)].tolist()]
    assert len(set(chosen)) > 1  # each choice draws its own mask


def test_plan_says_what_each_text_model_gets():
    def plan(name, masksub_type="mask"):
        model = MODELS[name]()
        family = find_family(model)
        return family.describe(model, masksub_type), family.mask_kind(model), family.sub_cost(model, masksub_type)

    text, kind, cost = plan("bert")
    assert kind == "tokens dropped" and cost == 0.5 and "[CLS]" in text and "absolute position embeddings" in text
    text, _, _ = plan("deberta-v3")
    assert "DeBERTa relative distances" in text and "absolute" not in text
    text, _, _ = plan("mpnet")
    assert "absolute position embeddings" in text and "relative attention bias" in text
    text, _, _ = plan("modernbert")
    assert "rotary" in text and "local attention window (128) counts kept tokens" in text
    text, kind, cost = plan("llama")
    assert kind == "tokens dropped" and cost == 0.5 and "rotary" in text and "last real token" in text
    text, kind, cost = plan("bart (mask token)")
    assert kind == "mask token" and cost == 1.0 and "no speed-up" in text
    assert plan("bart without mask token")[0].startswith("MaskSub: refused: its tokens cannot be dropped")
    assert plan("gpt2 without pad_token_id")[0].startswith("MaskSub: refused: config.pad_token_id is not set")
    assert "dropout sites" in plan("llama", "drop")[0] and "2 residual blocks" in plan("llama", "path")[0]


def test_mask_token_fallback_finds_the_saved_tokenizer_and_says_once_there_is_no_speed_up(
        tiny_bert_dir, tok, movie_reviews, caplog):
    model = MODELS["bart without mask token"]()
    model.config._name_or_path = str(tiny_bert_dir)  # the tokenizer saved beside the model has [MASK]
    family = MaskTokenTextFamily()
    assert family.refusal(model, "mask") is None and family.mask_token_id(model) == tok.mask_token_id
    batch = _batch(tok, movie_reviews, "bart without mask token")
    with caplog.at_level(logging.WARNING, logger="masksub_hf.models.hf_text"):
        for _ in range(2):
            with family.mask(model, batch, 0.5) as sub:
                assert sub["input_ids"].shape == batch["input_ids"].shape
                assert sub["input_ids"].eq(tok.mask_token_id).any()
    warnings = [r for r in caplog.records if "no" in r.getMessage() and "mask token" in r.getMessage()]
    assert len(warnings) == 1 and "not dropped" in warnings[0].getMessage()


def test_mask_token_fallback_pairs_per_token_predictions_where_the_token_was_not_replaced(tok, movie_reviews):
    model = TOKEN_CLASSIFIERS["absolute (bert)"][0]()
    model.config.mask_token_id = tok.mask_token_id
    batch = _padded(tok, movie_reviews, "right")
    ids = batch["input_ids"]
    labels = torch.zeros_like(ids).masked_fill(ids.eq(tok.cls_token_id) | ids.eq(tok.sep_token_id) |
                                               ~batch["attention_mask"].bool(), -100)
    family = MaskTokenTextFamily()
    with torch.no_grad(), family.mask(model, batch, 0.5) as sub:
        sub_logits, main = model(**sub).logits, model(**batch).logits
    replaced = sub["input_ids"].eq(tok.mask_token_id) & ~ids.eq(tok.mask_token_id)
    sub_pred, main_pred = family.pair(sub_logits, main, sub, {**batch, "labels": labels})
    keep = labels.ne(-100) & ~replaced
    assert replaced.any() and torch.equal(main_pred, main[keep]) and torch.equal(sub_pred, sub_logits[keep])


# real training steps: a left-padded decoder (with gradient checkpointing) and a token classifier
def _token_counter(model):
    seen = []
    handle = layer_stack(model)[0].register_forward_pre_hook(
        lambda m, a, kw: seen.append((a[0] if a else kw["hidden_states"]).shape[1]), with_kwargs=True)
    return seen, handle


def test_decoder_trains_with_mask_left_padded_and_logs_both_losses(tok, movie_reviews, tmp_path):
    model = MODELS["llama"]()
    model.config.num_labels = 2
    model.score = nn.Linear(32, 2, bias=False)
    data = text_dataset(tok, movie_reviews, n=16).remove_columns("token_type_ids")
    tok.padding_side = "left"
    try:
        collator = DataCollatorWithPadding(tok)
        seen, handle = _token_counter(model)
        trainer = MaskSubTrainer(model=model, args=args(tmp_path, max_steps=2, gradient_checkpointing=True,
                                                         gradient_checkpointing_kwargs={"use_reentrant": False}),
                                 train_dataset=data, data_collator=collator)
        trainer.train()
        handle.remove()
    finally:
        tok.padding_side = "right"
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2 and all(h["loss_main"] > 0 and h["loss_sub"] > 0 for h in logs)
    assert model.is_activation_checkpointing
    assert len(seen) == 4 and seen[1] < seen[0] and seen[3] < seen[2]  # per step: main on all tokens, sub on fewer


def test_token_classifier_trains_with_mask_and_logs_both_losses(tok, movie_reviews, tmp_path):
    from datasets import Dataset
    from transformers import DataCollatorForTokenClassification

    model = MODELS["token-classifier (deberta-v3)"]()
    enc = tok([t for t, _ in movie_reviews[:16]], truncation=True, max_length=24)
    labels = [[-100] + [i % 5 for i in range(len(ids) - 2)] + [-100] for ids in enc["input_ids"]]
    data = Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels})
    seen, handle = _token_counter(model)
    trainer = MaskSubTrainer(model=model, args=args(tmp_path, max_steps=2), train_dataset=data,
                             data_collator=DataCollatorForTokenClassification(tok))
    trainer.train()
    handle.remove()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2 and all(h["loss_main"] > 0 and h["loss_sub"] > 0 for h in logs)
    assert seen[1] < seen[0] and seen[3] < seen[2]  # per step: main on all tokens, sub on fewer


# models whose positions no scheme can keep: their tokens are masked in place, never dropped with wrong positions
UNKNOWN_POSITIONS = {
    "ALiBi (bloom)": (lambda: T.BloomForSequenceClassification(T.BloomConfig(
        vocab_size=1000, hidden_size=32, n_layer=2, n_head=2, pad_token_id=0)), "ALiBi"),
    "T5-style relative bias (t5 encoder)": (lambda: T.T5ForTokenClassification(T.T5Config(
        vocab_size=1000, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2, pad_token_id=0)),
        "relative attention bias"),
    "sinusoidal positions from the length (roformer)": (lambda: T.RoFormerForSequenceClassification(T.RoFormerConfig(
        **SMALL)), "no position embedding, position_ids argument"),
}


@pytest.mark.parametrize("case", list(UNKNOWN_POSITIONS))
def test_models_with_unknown_positions_mask_in_place_or_are_refused(case, tok, movie_reviews, tmp_path):
    make, reason = UNKNOWN_POSITIONS[case]
    torch.manual_seed(0)
    model = make().eval()
    family = find_family(model)
    assert isinstance(family, MaskTokenTextFamily)
    with pytest.raises(ValueError, match=reason):
        MaskSubTrainer(model=model, args=args(tmp_path, masksub_type="mask"))
    model.config.mask_token_id = tok.mask_token_id
    MaskSubTrainer(model=model, args=args(tmp_path, masksub_type="mask"))
    batch = _padded(tok, movie_reviews, "right")
    batch.pop("token_type_ids")
    with torch.no_grad(), family.mask(model, batch, 0.5) as sub:
        model(**sub)
    assert sub["input_ids"].shape == batch["input_ids"].shape and sub["input_ids"].eq(tok.mask_token_id).any()


def test_packed_rows_keep_the_start_of_every_sequence(tok, movie_reviews):
    """Padding-free packing (DataCollatorWithFlattening): one row, position_ids restarting per sequence."""
    from transformers import DataCollatorWithFlattening

    enc = tok([t for t, _ in movie_reviews[:4]], truncation=True, max_length=16)
    batch = DataCollatorWithFlattening(return_tensors="pt")([{"input_ids": ids} for ids in enc["input_ids"]])
    batch.pop("labels")
    model = MODELS["llama"]()
    starts = batch["position_ids"].eq(0).nonzero()[:, 1]
    assert len(starts) == 4
    with torch.no_grad(), find_family(model).mask(model, dict(batch), 0.5) as sub:
        model(**sub)
    assert sub["input_ids"].shape[1] < batch["input_ids"].shape[1]
    assert set(starts.tolist()) <= set(sub.index[0].tolist())  # every sequence still starts at position 0
    assert sub["position_ids"].eq(0).sum() == 4
    assert torch.equal(sub["position_ids"][0], batch["position_ids"][0, sub.index[0]])


@pytest.mark.parametrize("masksub_type", ["mask", "drop", "path"])
def test_question_answering_heads_are_refused_at_construction(masksub_type, tmp_path):
    """start/end logits over positions: no prediction for the relaxed loss, so not a crash at step 1 but a refusal."""
    for model in (_build(T.BertForQuestionAnswering, T.BertConfig(**SMALL)),
                  _build(T.LlamaForQuestionAnswering, T.LlamaConfig(**DECODER))):
        with pytest.raises(ValueError, match="start/end logits") as err:
            MaskSubTrainer(model=model, args=args(tmp_path, masksub_type=masksub_type))
        assert type(model).__name__ in str(err.value) and "no masksub_type works" in str(err.value)


def test_multiple_choice_trains_with_mask_and_logs_both_losses(tok, movie_reviews, tmp_path):
    from datasets import Dataset

    model = MODELS["multiple-choice (roberta)"]()
    texts = [t for t, _ in movie_reviews[:16]]
    enc = tok([t for t in texts for _ in range(2)], [t for t in texts[::-1] for _ in range(2)], truncation=True,
              max_length=24, padding="max_length")
    rows = {k: [v[i:i + 2] for i in range(0, len(v), 2)] for k, v in enc.items() if k != "token_type_ids"}
    data = Dataset.from_dict({**rows, "labels": [i % 2 for i in range(16)]})
    seen, handle = _token_counter(model)
    trainer = MaskSubTrainer(model=model, args=args(tmp_path, max_steps=2), train_dataset=data)
    trainer.train()
    handle.remove()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2 and all(h["loss_main"] > 0 and h["loss_sub"] > 0 for h in logs)
    assert seen[0] == 24 and seen[1] < 24  # every choice of the sub-branch is shorter


def test_pair_mask_keeps_each_kept_tokens_segment(tok, movie_reviews):
    """Sentence pairs (MRPC/RTE-shaped): a kept token keeps its own token type id, so the sub-branch still sees
    which sentence each kept token came from; both segments keep tokens."""
    model = MODELS["bert"]()
    firsts, seconds = [t for t, _ in movie_reviews[:6]], [t for t, _ in movie_reviews[6:12]]
    batch = dict(tok(firsts, seconds, padding=True, return_tensors="pt"))
    with torch.no_grad(), find_family(model).mask(model, batch, 0.5) as sub:
        model(**sub)
    for b in range(len(firsts)):
        cols = sub.index[b][sub.kept[b]]
        kept_types = sub["token_type_ids"][b, : len(cols)]
        assert torch.equal(kept_types, batch["token_type_ids"][b, cols])
        assert set(kept_types.tolist()) == {0, 1}
