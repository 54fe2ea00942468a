"""The entry scripts end bad input with one line, not a traceback."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import TrainingArguments

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("script, argv, message", [
    ("run_image.py", ["--train_dir", "{empty}", "--do_train"], "holds no image files"),
    ("run_clip.py", ["--train_data", "{csv}"], "no --csv_img_key column 'filepath'; the columns are text, label"),
    ("run_glue.py", ["--task_name", "qnlix"], "unknown --task_name 'qnlix'"),
])
def test_bad_input_is_one_line(script, argv, message, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "data.csv").write_text("text,label\nhello,0\n")
    argv = [a.format(empty=tmp_path / "empty", csv=tmp_path / "data.csv") for a in argv]
    done = subprocess.run([sys.executable, str(ROOT / script), "--output_dir", str(tmp_path / "out"), *argv],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{script}: error:") and message in last


@pytest.mark.parametrize("script", ["run_glue", "run_clip", "run_image"])
def test_one_compare_flag_with_one_behaviour_in_every_script(script):
    """--compare_baseline alone turns the comparison on, --compare_baseline false turns it off, in all three."""
    import importlib

    module = importlib.import_module(script)
    data = {"run_glue": ["--train_file", "t.csv"], "run_clip": ["--train_data", "t.csv"],
            "run_image": ["--train_dir", "d"]}[script]

    def compare(*flags):
        parsed = module.parse_args([*data, "--output_dir", "o", *flags])
        return next(a for a in parsed if hasattr(a, "compare_baseline")).compare_baseline

    assert compare("--compare_baseline") is True
    assert compare("--compare_baseline", "false") is False
    assert compare() is False  # on your own data: one run unless asked
    with pytest.raises(ValueError, match=r"--compare \(did you mean --compare_baseline\?\)"):
        compare("--compare")  # a prefix is not taken for a flag: named, with the flag it is short for


@pytest.mark.parametrize("script", ["run_glue", "run_clip", "run_image"])
def test_the_data_flag_in_either_spelling_turns_the_embedded_default_off(script):
    """--train-data is --train_data: naming your data in either spelling must not leave the embedded default
    run's budget (max steps, sample caps, the comparison) on your run."""
    import importlib

    module = importlib.import_module(script)
    flag, embedded_key = {"run_glue": ("--train-file", "max_train_samples"), "run_clip": ("--train-data", "max_steps"),
                          "run_image": ("--train-dir", "max_train_samples")}[script]
    own = [a for a in module.parse_args([flag, "t.csv", "--output_dir", "o"]) if hasattr(a, embedded_key)][0]
    embedded = [a for a in module.parse_args(["--output_dir", "o"]) if hasattr(a, embedded_key)][0]
    assert getattr(own, embedded_key) != getattr(embedded, embedded_key)
    assert str(getattr(embedded, embedded_key)) == str(module.EMBEDDED_DEFAULTS[embedded_key])


@pytest.mark.parametrize("script, defaults, embedded", [
    ("run_clip", (("--learning_rate", 0.0001), ("--per_device_train_batch_size", 32), ("--save_strategy", "no"),
                  ("--output_dir", "output/clip")), "With no --train_data or --dataset_name: the embedded default, "
                                                    "--max_steps 100"),
    ("run_glue", (("--output_dir", "output/glue"),), "With no model, task or data file: the embedded default, "
                                                     "--task_name movie-sentiment"),
    ("run_image", (("--output_dir", "output/image"),), "the embedded default, --compare_baseline true"),
])
def test_help_shows_the_defaults_each_script_uses(script, defaults, embedded):
    import importlib

    parser = importlib.import_module(script).build_parser()
    text = " ".join(parser.format_help().split())
    for flag, value in defaults:
        assert parser._option_string_actions[flag].default == value, flag
        assert f"(default: {value})" in text, flag
    assert embedded in text.split(" options: ")[0]  # the embedded default run's flags, in the description
    if script == "run_clip":
        assert "(default: 5e-05)" not in text  # TrainingArguments' learning rate is not what this script uses


@pytest.mark.parametrize("raised", [
    RuntimeError("SafetensorError: Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "
                 "\"No space left on device\" })"),
    OSError(28, "No space left on device"),
])
def test_a_full_disk_ends_in_one_line_whatever_raised_it(raised, capsys):
    from tasks.cli import run_cli

    def main(argv):
        raise raised

    with pytest.raises(SystemExit) as done:
        run_cli(main, "run_glue.py", [])
    err = capsys.readouterr().err
    assert done.value.code == 2 and "Traceback" not in err and err.count("\n") == 1
    assert err.startswith("run_glue.py: error: the disk is full") and "rerun the same command" in err


def test_a_perturbation_that_did_not_happen_ends_in_one_line(capsys):
    from masksub_hf.perturb.audit import PerturbationNotApplied
    from tasks.cli import run_cli

    def main(argv):
        raise PerturbationNotApplied("--masksub_type drop did not happen on this Model")

    with pytest.raises(SystemExit) as done:
        run_cli(main, "run_glue.py", [])
    assert done.value.code == 2 and "did not happen" in capsys.readouterr().err


@pytest.mark.parametrize("script", ["run_glue", "run_clip", "run_image"])
def test_help_starts_with_a_description_then_the_scripts_flags_then_masksubs_then_trainers(script):
    import importlib

    module = importlib.import_module(script)
    text = module.build_parser().format_help()
    assert text.startswith(f"usage: {script}.py [--flag value ...]")
    description = " ".join(module.__doc__.split("\n\n")[0].split())
    assert " ".join(text.split("\noptions:")[0].split()[1:]).find(description) > 0  # right under the usage line
    masksub, trainer = text.index("\nMaskSub: the sub-branch"), text.index("\nTrainer: transformers.TrainingArguments")
    assert text.index("\noptions:") < masksub < text.index("  --masksub_type") < trainer < text.index("  --learning_rate")


def _run_cli_on(main, capsys):
    from tasks.cli import run_cli

    with pytest.raises(BaseException) as done:
        run_cli(main, "run_glue.py", [])
    return done.value, capsys.readouterr().err


def test_an_error_is_the_inputs_or_a_defect_by_where_it_comes_from(capsys, tmp_path):
    import yaml

    # a library refusing what it was given before training (not a ValueError): the input's, one line naming it
    done, err = _run_cli_on(lambda argv: yaml.safe_load("labels: [pos, neg"), capsys)
    assert isinstance(done, SystemExit) and done.code == 2 and err.count("\n") == 1
    assert "raised by yaml" in err and "ParserError" in err

    # an error of this project's own code that is not one of its checks: a defect, with its traceback
    from tasks import cli

    done, err = _run_cli_on(lambda argv: cli._split_traceback(None), capsys)
    assert isinstance(done, TypeError) and "internal error: TypeError" in err and "a defect" in err


def test_a_library_error_once_training_runs_is_a_defect(capsys, tmp_path):
    from transformers import Trainer

    from tests.helpers import tiny_bert

    rows = [{"input_ids": torch.tensor([2, 5, 6, 3]), "labels": 7}] * 4  # the scripts check labels before this

    def main(argv):  # a label past the head's 3 outputs: torch's cross-entropy raises an IndexError in training
        args = TrainingArguments(str(tmp_path), max_steps=1, report_to=[], use_cpu=True, save_strategy="no")
        Trainer(model=tiny_bert(num_labels=3), args=args, train_dataset=rows).train()

    done, err = _run_cli_on(main, capsys)
    assert isinstance(done, IndexError) and "internal error: IndexError" in err
