"""Bad-input catalogue, the library API and the shared error path (tasks/cli.py)."""
import os

import pytest
from transformers import TrainingArguments

from masksub_hf import MaskSubConfig, MaskSubTrainer
from masksub_hf.nonfinite import NonFiniteTrainingError
from tasks.cli import ArgumentParser, UsageError, run_cli
from tests.helpers import args, image_dataset, tiny_vit


@pytest.mark.parametrize("kwargs, message", [
    ({"masksub_nonfinite": "ignore"}, "--masksub_nonfinite 'ignore' is unknown; choose one of stop, skip, off"),
    ({"masksub_nonfinite_max_skips": 0}, "--masksub_nonfinite_max_skips must be a positive integer; got 0"),
    ({"masksub_type": "cutout"}, "--masksub_type 'cutout' is unknown"),
    ({"masksub_ratio": 1.0}, "--masksub_ratio must be in [0, 1)"),
])
def test_config_values(kwargs, message):
    with pytest.raises(ValueError) as err:
        MaskSubConfig(output_dir="unused", **kwargs)
    assert message in str(err.value)


def test_resuming_from_a_half_written_checkpoint_is_refused(digits, tmp_path):
    half = tmp_path / "checkpoint-4"
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"partial")
    trainer = MaskSubTrainer(model=tiny_vit(), args=args(tmp_path), train_dataset=image_dataset(digits))
    with pytest.raises(ValueError, match="cannot resume from .*checkpoint-4: it has no trainer_state.json"):
        trainer.train(resume_from_checkpoint=str(half))
    with pytest.raises(ValueError, match=r"No valid checkpoint found in output directory"):
        trainer.train(resume_from_checkpoint=True)


def test_resume_true_takes_the_last_complete_checkpoint(digits, tmp_path):
    MaskSubTrainer(model=tiny_vit(), train_dataset=image_dataset(digits),
                   args=args(tmp_path, max_steps=2, save_strategy="steps", save_steps=2)).train()
    (tmp_path / "checkpoint-3").mkdir()  # a later save that was killed before it wrote anything useful
    (tmp_path / "checkpoint-3" / "model.safetensors").write_bytes(b"partial")
    trainer = MaskSubTrainer(model=tiny_vit(), train_dataset=image_dataset(digits),
                             args=args(tmp_path, max_steps=4, save_strategy="no"))
    trainer.train(resume_from_checkpoint=True)  # Trainer alone would pick checkpoint-3 and crash
    steps = [e["step"] for e in trainer.state.log_history if "loss" in e]
    assert steps == [1, 2, 3, 4] and trainer.state.global_step == 4


def test_plain_training_arguments_get_the_stop_default(digits, tmp_path):
    plain = TrainingArguments(output_dir=str(tmp_path), max_steps=10, use_cpu=True, report_to=[], learning_rate=1e6,
                              max_grad_norm=0.0, per_device_train_batch_size=8, save_strategy="no")
    trainer = MaskSubTrainer(model=tiny_vit(), args=plain, train_dataset=image_dataset(digits))
    with pytest.raises(NonFiniteTrainingError, match=r"^step \d+: "):
        trainer.train()
    assert trainer.state.global_step < 9


# ---- the shared error path --------------------------------------------------------------------------
def stopped(raiser, capsys, argv=()):
    def main(argv):
        raise raiser
    with pytest.raises(SystemExit) as done:
        run_cli(main, "prog.py", list(argv))
    err = capsys.readouterr().err
    return done.value.code, err.strip().splitlines()


def test_user_errors_exit_2_in_one_line(capsys):
    code, lines = stopped(ValueError("bad thing\n  second line"), capsys)
    assert code == 2 and lines == ["prog.py: error: bad thing second line (--traceback shows the traceback)"]
    code, lines = stopped(FileNotFoundError(2, "No such file or directory", "x.csv"), capsys)
    assert code == 2 and lines[-1].startswith("prog.py: error: [Errno 2] No such file or directory: 'x.csv'")


def test_non_finite_stop_exits_3_and_interrupt_130(capsys):
    code, lines = stopped(NonFiniteTrainingError("step 7: the sub-branch loss is nan; ..."), capsys)
    assert code == 3 and lines == ["prog.py: error: step 7: the sub-branch loss is nan; ..."]
    code, lines = stopped(KeyboardInterrupt(), capsys)
    assert code == 130 and "rerun the same command to resume" in lines[-1]


def test_traceback_flag_is_ours_and_debug_stays_trainers(capsys):
    seen = []
    run_cli(lambda argv: seen.append(argv), "prog.py", ["--debug", "underflow_overflow", "--seed", "1"])
    assert seen == [["--debug", "underflow_overflow", "--seed", "1"]]
    with pytest.raises(RuntimeError):  # --traceback is taken out of argv, and errors keep their traceback
        run_cli(lambda argv: (_ for _ in ()).throw(RuntimeError(f"boom {argv}")), "prog.py", ["--traceback"])
    for argv in (["--debug"], ["--debug", "--seed", "1"]):  # a bare --debug: one line naming --traceback
        with pytest.raises(SystemExit) as done:
            run_cli(lambda argv: None, "prog.py", argv)
        assert done.value.code == 2 and "use --traceback" in capsys.readouterr().err


def test_a_stray_value_is_one_line():
    parser = ArgumentParser(MaskSubConfig)
    with pytest.raises(UsageError, match="unexpected argument"):
        parser.parse_args_into_dataclasses(args=["--output_dir", "x", "stray"])
    assert not os.path.exists("x")
