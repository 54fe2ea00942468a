"""--masksub_type auto: the measured table picks the type per model kind and head, says why in one line, and
`inspect` and the README print the same table."""
import logging
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import (HfArgumentParser, PretrainedConfig, PreTrainedModel, ResNetConfig,
                          ResNetForImageClassification)
from transformers.modeling_outputs import SequenceClassifierOutput

from masksub_hf import MaskSubConfig, MaskSubTrainer, recommend
from masksub_hf.models.base import find_family
from masksub_hf.plan import plan
from masksub_hf.recommend import CHOICES, UNMEASURED, Choice
from tests.helpers import tiny_bert, tiny_vit


def auto_args(tmp_path, **kw):
    return MaskSubConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[], **kw)


def test_auto_is_the_default_and_an_explicit_type_gets_the_papers_ratio(tmp_path):
    parser = HfArgumentParser(MaskSubConfig)
    (default,) = parser.parse_args_into_dataclasses(["--output_dir", str(tmp_path)])
    assert (default.masksub_type, default.masksub_ratio) == ("auto", None)
    (mask,) = parser.parse_args_into_dataclasses(["--output_dir", str(tmp_path), "--masksub_type", "mask"])
    assert mask.masksub_ratio == 0.5


@pytest.mark.parametrize("num_labels, row", [(3, ("text", "classification")), (1, ("text", "regression"))])
def test_auto_picks_the_row_of_the_text_head_and_logs_why(tmp_path, caplog, num_labels, row):
    choice = CHOICES[row][0]
    with caplog.at_level(logging.WARNING, logger="masksub_hf.trainer"):
        trainer = MaskSubTrainer(model=tiny_bert(num_labels=num_labels), args=auto_args(tmp_path))
    assert (trainer.masksub_type, trainer.masksub_ratio) == (choice.masksub_type, choice.ratio)
    assert trainer.masksub_choice is choice
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("masksub_type auto:")]
    assert len(lines) == 1
    assert f"{row[1]} on a text model -> " in lines[0] and choice.evidence in lines[0] and "RESULTS.md" in lines[0]


def test_auto_on_a_vit_takes_the_vit_style_image_row(tmp_path):
    trainer = MaskSubTrainer(model=tiny_vit(), args=auto_args(tmp_path))
    choice = CHOICES[("ViT-style image", "classification")][0]
    assert (trainer.masksub_type, trainer.masksub_ratio, trainer.masksub_choice) == (choice.masksub_type, choice.ratio,
                                                                                     choice)
    assert trainer.family is not None and choice.established


def test_a_cnn_takes_its_own_row_and_is_not_told_of_the_vit_gain(tmp_path, caplog):
    """The image gains were measured where mask drops patch tokens; a CNN masks pixel blocks in place and takes its
    own row's first choice (every arm measured level there): its log line must not say a gain was established."""
    model = ResNetForImageClassification(ResNetConfig(num_channels=1, embedding_size=8, hidden_sizes=[8, 16],
                                                      depths=[1, 1], num_labels=10))
    with caplog.at_level(logging.WARNING, logger="masksub_hf.trainer"):
        trainer = MaskSubTrainer(model=model, args=auto_args(tmp_path))
    choice = CHOICES[("CNN-style image", "classification")][0]
    assert trainer.masksub_choice is choice and not choice.established
    assert (trainer.masksub_type, trainer.masksub_ratio) == (choice.masksub_type, choice.ratio)
    assert (f"classification on a CNN-style image model -> {choice.masksub_type} at {choice.ratio:g}; no gain "
            "established in this domain") in caplog.text


def test_an_explicit_ratio_overrides_autos_and_is_said(tmp_path, caplog, monkeypatch):
    monkeypatch.setitem(CHOICES, ("text", "classification"), [Choice("drop", 0.1, "stand-in evidence")])
    with caplog.at_level(logging.WARNING, logger="masksub_hf.trainer"):
        trainer = MaskSubTrainer(model=tiny_bert(dropout=0.1), args=auto_args(tmp_path, masksub_ratio=0.3))
    assert (trainer.masksub_type, trainer.masksub_ratio) == ("drop", 0.3)
    assert "drop at 0.3 (your --masksub_ratio; auto's is 0.1)" in caplog.text


def test_auto_choosing_none_is_plain_trainer(tmp_path, monkeypatch):
    monkeypatch.setitem(CHOICES, ("text", "classification"), [Choice("none", 0.0, "nothing was ahead")])
    trainer = MaskSubTrainer(model=tiny_bert(), args=auto_args(tmp_path))
    assert trainer.masksub_type == "none" and trainer.family is None
    assert trainer.masksub_setting() == "--masksub_type none"


def test_a_model_that_cannot_mask_falls_to_the_next_choice(tmp_path, caplog):
    class Config(PretrainedConfig):
        model_type = "tiny-mlp"

    class Mlp(PreTrainedModel):
        config_class = Config

        def __init__(self, config):
            super().__init__(config)
            self.body = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.1), nn.Linear(8, 2))
            self.post_init()

        def forward(self, x, labels=None):
            logits = self.body(x)
            loss = None if labels is None else nn.functional.cross_entropy(logits, labels)
            return SequenceClassifierOutput(loss=loss, logits=logits)

    with caplog.at_level(logging.WARNING, logger="masksub_hf.trainer"):
        trainer = MaskSubTrainer(model=Mlp(Config()), args=auto_args(tmp_path))
    assert (trainer.masksub_type, trainer.masksub_ratio) == ("drop", 0.5)
    assert trainer.masksub_choice is UNMEASURED[1]
    assert "-> drop at 0.5 (mask does not fit this model (masking needs to know where its tokens enter" in caplog.text


@pytest.mark.parametrize("num_labels, picked", [(3, ("mask", 0.25)), (1, ("none", 0.0))])
def test_a_text_model_that_takes_neither_drop_nor_path_gets_the_rows_measured_fallback(tmp_path, caplog, monkeypatch,
                                                                                       num_labels, picked):
    """Text rows rank their measured settings: never the paper's unmeasured mask 0.5, which the text benchmarks
    measured at its worst (and regression heads, where every mask arm lost on every seed, never mask at all)."""
    model = tiny_bert(num_labels=num_labels)
    family = find_family(model)
    refuse = {"drop": "no dropout here", "path": "no blocks here"}
    monkeypatch.setattr(type(family), "refusal", lambda self, m, t: refuse.get(t))
    with caplog.at_level(logging.WARNING, logger="masksub_hf.trainer"):
        trainer = MaskSubTrainer(model=model, args=auto_args(tmp_path))
    assert (trainer.masksub_type, trainer.masksub_ratio) == picked
    assert trainer.masksub_choice is CHOICES[("text", "classification" if num_labels > 1 else "regression")][2]
    assert "(drop does not fit this model (no dropout here)) (path does not fit this model (no blocks here))" in caplog.text
    assert trainer.masksub_choice.evidence in caplog.text
    if picked[0] == "none":
        assert trainer.family is None and "-> none (plain Trainer, no sub-branch) (drop does not fit" in caplog.text


def test_inspect_prints_autos_choice(tmp_path):
    text = plan(tiny_bert(num_labels=1))
    choice = CHOICES[("text", "regression")][0]
    assert recommend.explain(("text", "regression"), choice) in text.splitlines()
    assert "masksub_type auto: regression on a text model -> " in text


def test_the_docs_auto_tables_are_the_choice_table():
    for doc in ("README.md", "docs/RESULTS.md"):
        text = (Path(__file__).parents[1] / doc).read_text()
        table = text.split("<!-- auto-choices:start -->")[1].split("<!-- auto-choices:end -->")[0].strip()
        assert table == recommend.readme_table(), f"regenerate {doc}'s: python -m masksub_hf.plan --auto-table"


def test_every_choice_is_a_valid_setting():
    from masksub_hf.config import MASKSUB_TYPES, RELAXED_LOSSES, validate

    for ranked in list(CHOICES.values()) + [UNMEASURED]:
        for c in ranked:
            assert c.masksub_type in MASKSUB_TYPES and c.loss in RELAXED_LOSSES
            validate(c.masksub_type, c.ratio, c.loss)


def test_the_evidence_quotes_the_committed_benchmark_runs():
    """auto's table must not drift from the runs it cites: each measured choice's paired headline, recomputed from
    the committed bench/results, stands in its evidence, and `established` agrees with the interval."""
    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root / "bench"))
    import quality

    measured = [c for ranked in CHOICES.values() for c in ranked if c.measured]
    assert len(measured) >= 3
    for choice in measured:
        head = quality.headline(str(root / "bench" / "results"), *choice.measured, seeds=[0, 1, 2, 3, 4])
        assert head is not None and head["n"] == 5, choice.measured
        assert f"{head['diff']}" in choice.evidence and f"{head['wins']} seeds" in choice.evidence, (choice.measured, head)
        assert choice.established == head["verdict"].startswith("better"), (choice.measured, head["verdict"])
    for ranked in CHOICES.values():  # a figure no committed run backs says where it comes from
        for c in ranked:
            assert c.measured or c.evidence.startswith("not measured") or "earlier run" in c.evidence, c.evidence
            assert not c.established or c.measured, c.evidence  # a gain is claimed from committed runs only
