import pytest
from transformers import HfArgumentParser, TrainingArguments

from masksub_hf import MaskSubConfig, MaskSubTrainer
from tests.helpers import tiny_bert


def test_cli_flags_parse_and_defaults(tmp_path):
    parser = HfArgumentParser(MaskSubConfig)
    (cfg,) = parser.parse_args_into_dataclasses(["--output_dir", str(tmp_path), "--masksub_type", "path",
                                                 "--masksub_ratio", "0.3", "--use_cpu"])
    assert (cfg.masksub_type, cfg.masksub_ratio, cfg.masksub_loss, cfg.masksub_plain) == ("path", 0.3, "auto", False)
    (default,) = parser.parse_args_into_dataclasses(["--output_dir", str(tmp_path)])
    assert (default.masksub_type, default.masksub_ratio) == ("auto", None)  # the measured best: tests/test_auto.py


def test_help_explains_each_flag():
    text = HfArgumentParser(MaskSubConfig).format_help()
    for flag in ("--masksub_type", "--masksub_ratio", "--masksub_loss", "--masksub_plain"):
        assert flag in text
    assert "DropSub" in text and "PathSub" in text


@pytest.mark.parametrize("ratio", [1.0, -0.1, 1.5])
def test_ratio_out_of_range_is_a_clear_error(tmp_path, ratio):
    with pytest.raises(ValueError, match=r"masksub_ratio must be in \[0, 1\)"):
        MaskSubConfig(output_dir=str(tmp_path), masksub_ratio=ratio)


def test_unknown_type_lists_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="mask, drop, path, none"):
        MaskSubConfig(output_dir=str(tmp_path), masksub_type="cutout")


def test_plain_training_arguments_use_the_paper_defaults(tmp_path):
    trainer = MaskSubTrainer(model=tiny_bert(), args=TrainingArguments(output_dir=str(tmp_path), use_cpu=True,
                                                                       report_to=[]))
    assert (trainer.masksub_type, trainer.masksub_ratio) == ("mask", 0.5)
    assert trainer.family is not None


def test_plain_masking_needs_a_perturbation(tmp_path):
    with pytest.raises(ValueError, match="masksub_plain"):
        MaskSubTrainer(model=tiny_bert(), args=MaskSubConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[],
                                                             masksub_type="none", masksub_plain=True))
