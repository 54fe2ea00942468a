"""python -m masksub_hf.plan: the plan for a model directory, and the README table from the registry."""
import re
from pathlib import Path

import pytest
from transformers import ResNetConfig, ResNetForImageClassification

from masksub_hf import MaskSubTrainer
from masksub_hf.plan import main, plan, readme_table
from tests.helpers import args, tiny_bert, tiny_vit


def test_inspect_prints_the_plan_of_a_local_model_directory(tmp_path, capsys):
    tiny_bert().save_pretrained(tmp_path / "bert")
    assert main([str(tmp_path / "bert")]) == 0
    out = capsys.readouterr().out
    assert "model: BertForSequenceClassification" in out and "family: HF text encoders" in out
    assert re.search(r"mask .*tokens dropped .*drops 0.5 of its other real tokens.*absolute position embeddings; "
                     r"sub-branch about 0.50x .* a step about 1.50x", out)
    assert re.search(r"drop .*\d+ dropout sites raised to p=0.5", out)
    assert re.search(r"path .*2 residual blocks skipped", out)


def test_inspect_says_why_a_type_is_refused_as_the_trainer_does(tmp_path, capsys):
    model = ResNetForImageClassification(ResNetConfig(num_channels=1, embedding_size=8, hidden_sizes=[8, 16],
                                                      depths=[1, 1], num_labels=3))
    model.save_pretrained(tmp_path / "resnet")
    assert main([str(tmp_path / "resnet"), "--masksub_type", "drop"]) == 0
    out = capsys.readouterr().out
    assert "drop  refused: it has no dropout module" in out and "  mask " not in out and "  path " not in out
    with pytest.raises(ValueError, match="no dropout module"):
        MaskSubTrainer(model=model, args=args(tmp_path / "run", masksub_type="drop"))
    assert "refused" not in plan(tiny_bert(), ["drop"])


def test_inspect_of_a_missing_directory_is_one_line(tmp_path, capsys, monkeypatch):
    assert main([str(tmp_path / "nothing-here")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path / 'nothing-here'}: no such directory" in err and "hub" not in err
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a bare name may be a hub id: said so, in one line
    monkeypatch.chdir(tmp_path)
    assert main(["no-such-model"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'no-such-model': no such local directory, and as a hub id:" in err


def test_inspect_refuses_a_ratio_out_of_range_and_takes_dashed_flags(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--masksub_ratio", "1.5"])
    assert "--masksub_ratio must be in [0, 1)" in capsys.readouterr().err
    tiny_vit().save_pretrained(tmp_path / "vit")
    assert main([str(tmp_path / "vit"), "--masksub-type", "mask", "--masksub-ratio", "0.25"]) == 0
    out = capsys.readouterr().out
    assert "mask  MaskSub: tokens dropped at ratio 0.25 (patches only: the first token (CLS) is kept)" in out
    assert "  drop " not in out


def test_the_readme_table_is_the_registry():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    table = readme.split("<!-- supported-models:start -->")[1].split("<!-- supported-models:end -->")[0].strip()
    assert table == readme_table(), "regenerate it: python -m masksub_hf.plan --readme-table"


def test_a_saved_model_without_tokenizer_files_plans_as_the_same_model_in_memory(tmp_path, capsys):
    """No tokenizer saved: the placeholder transformers would build from the config is not the model's, so no
    mask token is taken from it, and mask is refused as it is for the model in memory."""
    from transformers import BartConfig, BartForSequenceClassification

    model = BartForSequenceClassification(BartConfig(vocab_size=100, d_model=32, encoder_layers=1, decoder_layers=1,
                                                     encoder_attention_heads=4, decoder_attention_heads=4,
                                                     encoder_ffn_dim=64, decoder_ffn_dim=64))
    model.save_pretrained(tmp_path / "bart")
    assert main([str(tmp_path / "bart"), "--masksub_type", "mask"]) == 0
    saved = capsys.readouterr().out
    assert "mask  refused: its tokens cannot be dropped" in saved and "no tokenizer with a mask token" in saved
    assert "mask  refused" in plan(model, ["mask"])
