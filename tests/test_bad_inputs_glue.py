"""Bad-input catalogue, run_glue.py: each bad input ends with exit status 2 and one line naming the input
and the fix (no traceback), or trains with a named InputWarning when it is legal but suspicious.
Refusals come before the model is loaded wherever the input alone shows the problem."""
import json
import logging

import pytest
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, GPT2Config

import run_glue
from tasks.cli import InputWarning
from tests.catalogue import refused, warned
from tests.test_glue import single, write


@pytest.fixture
def argv(tiny_bert_dir, tmp_path):
    def make(*extra, out="out"):
        return ["--model_name_or_path", str(tiny_bert_dir), "--output_dir", str(tmp_path / out), "--cache_dir",
                str(tmp_path / "cache"), "--max_steps", "1", "--per_device_train_batch_size", "8",
                "--per_device_eval_batch_size", "32", "--save_strategy", "no", "--report_to", "none",
                "--disable_tqdm", "true", "--seed", "0", *extra]
    return make


@pytest.fixture
def rows(movie_reviews):
    return single(movie_reviews, 0, 24)


def csv_text(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return str(path)


def table(rows, sep=",", columns=("sentence", "label")):
    lines = [sep.join(columns)] + [sep.join(str(r[c]).replace(sep, " ") for c in columns) for r in rows]
    return "\n".join(lines) + "\n"


# ---- files that are not what the default expects ---------------------------------------------------
def test_empty_file(argv, tmp_path, capsys):
    train = csv_text(tmp_path / "train.csv", "")
    refused(run_glue.cli, argv("--train_file", train, "--do_train"), capsys, f"--train_file {train} is empty")


def test_header_only_file(argv, tmp_path, capsys):
    train = csv_text(tmp_path / "train.csv", "sentence,label\n")
    refused(run_glue.cli, argv("--train_file", train, "--do_train"), capsys, train, "has a header", "but no rows")


def test_empty_json_lines_file(argv, tmp_path, capsys):
    train = csv_text(tmp_path / "train.jsonl", "\n\n")
    refused(run_glue.cli, argv("--train_file", train, "--do_train"), capsys, train, "is empty")


def test_broken_json_names_the_file(argv, tmp_path, capsys):
    train = csv_text(tmp_path / "train.json", '{"sentence": "fine", "label": 1}\n{"sentence": "broken\n')
    refused(run_glue.cli, argv("--train_file", train, "--do_train"), capsys, f"--train_file {train} cannot be read as json")


def test_latin1_file_names_the_byte_and_the_flag(argv, rows, tmp_path, capsys):
    rows[2]["sentence"] = "un film épatant"
    train = csv_text(tmp_path / "train.csv", table(rows), "latin-1")
    refused(run_glue.cli, argv("--train_file", train, "--do_train"), capsys,
            train, "is not utf-8 text (byte 0xe9 on line 4)", "--data_encoding")


def test_latin1_file_reads_with_the_flag(argv, rows, tmp_path, caplog):
    rows[2]["sentence"] = "un film épatant"
    train = csv_text(tmp_path / "train.csv", table(rows), "latin-1")
    run_glue.main(argv("--train_file", train, "--do_train", "--data_encoding", "latin-1"))


def test_semicolon_separator_is_detected_and_named(argv, rows, tmp_path):
    val = csv_text(tmp_path / "val.csv", table(rows, ";"))
    with pytest.warns(InputWarning) as record:
        metrics = run_glue.main(argv("--task_name", "sst2", "--validation_file", val, "--do_eval"))
    warned(record, val, "separated by semicolons (detected")
    assert metrics["eval_samples"] == 24


def test_utf16_with_byte_order_mark_is_read(argv, rows, tmp_path):
    val = csv_text(tmp_path / "val.csv", table(rows), "utf-16")
    assert run_glue.main(argv("--task_name", "sst2", "--validation_file", val, "--do_eval"))["eval_samples"] == 24


def test_label_column_named_differently_in_validation(argv, rows, tmp_path, capsys):
    train = csv_text(tmp_path / "train.csv", table(rows))
    val = csv_text(tmp_path / "val.csv", table(rows, columns=("sentence", "label")).replace("sentence,label", "sentence,target", 1))
    refused(run_glue.cli, argv("--train_file", train, "--validation_file", val, "--do_train", "--do_eval"), capsys,
            val, "has no column 'label'", "'target'", "--label_column_name")


def test_missing_file(argv, tmp_path, capsys):
    refused(run_glue.cli, argv("--train_file", str(tmp_path / "nope.csv"), "--do_train"), capsys, "nope.csv: no such file")


def test_mixed_file_kinds(argv, rows, tmp_path, capsys):
    train = csv_text(tmp_path / "train.csv", table(rows))
    val = write(tmp_path / "val.json", rows)
    refused(run_glue.cli, argv("--train_file", train, "--validation_file", val, "--do_train"), capsys,
            "must all be csv/tsv, or all json/jsonl")


# ---- columns and labels ---------------------------------------------------------------------------
def test_extra_text_column_is_not_taken_as_a_second_sentence(argv, rows, tmp_path, capsys):
    train = write(tmp_path / "train.json", [dict(r, source="rotten-tomatoes") for r in rows])
    refused(run_glue.cli, argv("--train_file", train, "--do_train"), capsys,
            "several text columns (sentence, source)", "--text_column_names sentence")


def test_chosen_columns_and_mapping_are_logged_in_one_line(argv, rows, tmp_path, caplog):
    train = write(tmp_path / "train.json", [dict(r, source_id=i, label=["neg", "pos"][r["label"]])
                                             for i, r in enumerate(rows)])
    with caplog.at_level(logging.INFO, logger="tasks.glue"):
        run_glue.main(argv("--train_file", train, "--do_train"))
    line = [r.getMessage() for r in caplog.records if r.getMessage().startswith("columns:")]
    assert line == ["columns: text 'sentence', label 'label': 'neg'->0, 'pos'->1; ignored: source_id"]


def test_minus_one_labels_in_training_data(argv, rows, tmp_path, capsys):
    rows[3]["label"] = -1
    train = write(tmp_path / "train.csv", rows)
    refused(run_glue.cli, argv("--train_file", train, "--do_train"), capsys, train, "1 row(s) labelled -1",
            "--test_file")


def test_minus_one_labels_with_a_task(argv, rows, tmp_path, capsys):
    rows[3]["label"] = -1
    train = write(tmp_path / "train.csv", rows)
    refused(run_glue.cli, argv("--task_name", "sst2", "--train_file", train, "--do_train"), capsys,
            train, "labelled -1")


def test_minus_one_is_a_real_regression_score_but_an_all_minus_one_split_is_refused(argv, rows, tmp_path, capsys):
    for i, r in enumerate(rows):
        r["label"] = [-1.0, 0.5, 2.25, -3.5][i % 4]
    train = write(tmp_path / "train.csv", rows)
    metrics = run_glue.main(argv("--train_file", train, "--validation_file", train, "--do_train", "--do_eval"))
    assert "eval_mse" in metrics  # trained and evaluated as regression, the -1.0 scores included
    for r in rows:
        r["label"] = -1.0
    unlabelled = write(tmp_path / "unlabelled.csv", rows)
    refused(run_glue.cli, argv("--train_file", train, "--validation_file", unlabelled, "--do_train", "--do_eval",
                               "--overwrite_output_dir"), capsys, unlabelled, "labelled -1", "--test_file")


def test_labels_mixing_ids_and_names(argv, rows, tmp_path, capsys):
    for i, r in enumerate(rows):
        r["label"] = ["negative", "positive"][r["label"]] if i % 2 else r["label"]
    train = write(tmp_path / "train.csv", rows)
    refused(run_glue.cli, argv("--train_file", train, "--do_train"), capsys, "mixes class ids", "class names",
            "write every label one way")


def test_class_ids_written_as_floats(argv, rows, tmp_path, capsys):
    train = write(tmp_path / "train.json", [dict(r, label=float(r["label"])) for r in rows])
    refused(run_glue.cli, argv("--train_file", train, "--do_train"), capsys, "0.0, 1.0",
            "--problem_type single_label_classification or --problem_type regression")


def test_class_ids_written_as_floats_train_as_classes_with_the_flag(argv, rows, tmp_path):
    train = write(tmp_path / "train.json", [dict(r, label=float(r["label"])) for r in rows])
    run_glue.main(argv("--train_file", train, "--do_train", "--problem_type", "single_label_classification"))
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["problem_type"] == "single_label_classification" and len(config["id2label"]) == 2


def test_validation_only_class(argv, rows, tmp_path, capsys):
    train = write(tmp_path / "train.csv", [dict(r, label=["neg", "pos"][r["label"]]) for r in rows])
    val = write(tmp_path / "val.csv", [dict(r, label="neutral" if i == 0 else ["neg", "pos"][r["label"]])
                                       for i, r in enumerate(rows)])
    refused(run_glue.cli, argv("--train_file", train, "--validation_file", val, "--do_train", "--do_eval"), capsys,
            val, "'neutral'", "cannot be learnt")


def test_a_single_class(argv, rows, tmp_path, capsys):
    train = write(tmp_path / "train.csv", [dict(r, label="pos") for r in rows])
    line = refused(run_glue.cli, argv("--train_file", train, "--do_train"), capsys, "a single class ('pos'",
                   "at least two classes")
    assert "--problem_type" not in line  # no flag that leads to a one-class head


def test_a_single_class_with_a_task(argv, rows, tmp_path, capsys):
    train = write(tmp_path / "train.csv", [dict(r, label=1) for r in rows])
    refused(run_glue.cli, argv("--task_name", "sst2", "--train_file", train, "--do_train"), capsys,
            "a single class ('positive'")


def test_constant_regression_target(argv, rows, tmp_path, capsys):
    train = write(tmp_path / "train.json", [dict(r, label=0.5) for r in rows])
    refused(run_glue.cli, argv("--train_file", train, "--do_train"), capsys, "every label is 0.5", "nothing to fit")


def test_empty_label_cells(argv, rows, tmp_path, capsys):
    train = csv_text(tmp_path / "train.csv", table(rows).replace(",1\n", ",\n", 2))
    refused(run_glue.cli, argv("--train_file", train, "--do_train"), capsys, train, "2 row(s) with an empty label")


def test_task_name_with_column_flags(argv, rows, tmp_path, capsys):
    train = write(tmp_path / "train.csv", rows)
    refused(run_glue.cli, argv("--task_name", "sst2", "--train_file", train, "--do_train", "--text_column_names",
                               "sentence"), capsys, "--task_name sst2 fixes the columns")


def test_three_text_columns_named(argv, rows, tmp_path, capsys):
    train = write(tmp_path / "train.csv", rows)
    refused(run_glue.cli, argv("--train_file", train, "--do_train", "--text_column_names", "a,b,c"), capsys,
            "--text_column_names takes one column or two")


# ---- text that is not text -------------------------------------------------------------------------
def test_empty_text_cells_are_dropped_with_a_warning(argv, rows, tmp_path):
    rows[4]["sentence"] = ""
    val = csv_text(tmp_path / "val.csv", table(rows))
    with pytest.warns(InputWarning) as record:
        metrics = run_glue.main(argv("--task_name", "sst2", "--validation_file", val, "--do_eval"))
    warned(record, val, "dropped 1 of 24 row(s) with an empty 'sentence' (file lines 6)")
    assert metrics["eval_samples"] == 23


def test_all_texts_empty(argv, rows, tmp_path, capsys):
    train = write(tmp_path / "train.json", [dict(r, sentence=" ") for r in rows])
    refused(run_glue.cli, argv("--task_name", "sst2", "--train_file", train, "--do_train"), capsys,
            train, "every row has an empty 'sentence'")


def test_model_directory_without_tokenizer_files(argv, tiny_bert_dir, rows, tmp_path, capsys):
    bare = tmp_path / "bare"
    AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2).save_pretrained(bare)
    train = write(tmp_path / "train.csv", rows)
    refused(run_glue.cli, argv("--task_name", "sst2", "--train_file", train, "--do_train", "--model_name_or_path",
                               str(bare)), capsys, f"{bare} holds no tokenizer files", "--tokenizer_name")


def test_tokenizer_larger_than_the_embedding(argv, tiny_bert_dir, rows, tmp_path, capsys):
    small = tmp_path / "small"
    config = AutoConfig.from_pretrained(tiny_bert_dir, vocab_size=500)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(small)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(small)
    train = write(tmp_path / "train.csv", rows)
    refused(run_glue.cli, argv("--task_name", "sst2", "--train_file", train, "--do_train", "--model_name_or_path",
                               str(small)), capsys, "has 1000 tokens but the model embeds only 500")


def test_max_seq_length_above_the_positions_is_clamped(argv, rows, tmp_path):
    val = write(tmp_path / "val.csv", rows)
    with pytest.warns(InputWarning) as record:
        run_glue.main(argv("--task_name", "sst2", "--validation_file", val, "--do_eval", "--max_seq_length", "512"))
    warned(record, "--max_seq_length 512 is more than the model takes (128 positions); using 128")


def test_max_seq_length_zero(argv, rows, tmp_path, capsys):
    val = write(tmp_path / "val.csv", rows)
    refused(run_glue.cli, argv("--task_name", "sst2", "--validation_file", val, "--do_eval", "--max_seq_length", "0"),
            capsys, "--max_seq_length must be at least 1")


# ---- one error path: settings, flags, output, models ------------------------------------------------
@pytest.mark.parametrize("flags, message", [
    (["--per_device_train_batch_size", "0"], "--per_device_train_batch_size must be at least 1; got 0"),
    (["--learning_rate", "-0.001"], "--learning_rate must be a positive number; got -0.001"),
    (["--learning_rate", "nan"], "--learning_rate must be a positive number; got nan"),
    (["--max_train_samples", "0"], "--max_train_samples must be at least 1"),
    (["--learnig_rate", "1e-3"], "unknown flag(s): --learnig_rate (did you mean --learning_rate?)"),
    (["--learning_rate", "fast"], "argument --learning_rate/--learning-rate: invalid float value: 'fast'"),
    (["--masksub_nonfinite", "ignore"], "invalid choice: 'ignore'"),
    (["--masksub_type", "none", "--compare_baseline", "true"], "--compare_baseline trains a baseline"),
    (["--max_steps", "0", "--num_train_epochs", "0"], "nothing to train"),
])
def test_settings_refused_before_any_loading(argv, flags, message, capsys):
    refused(run_glue.cli, argv("--task_name", "sst2", "--train_file", "never-read.csv", "--do_train", *flags),
            capsys, message)


def test_unwritable_output_dir_is_found_before_loading(argv, rows, tmp_path, capsys):
    (tmp_path / "file").write_text("a file")
    refused(run_glue.cli, argv("--task_name", "sst2", "--train_file", "never-read.csv", "--do_train",
                               out="file/out"), capsys, "--output_dir", "is not writable", "choose another --output_dir")


def test_output_dir_that_is_a_file(argv, tmp_path, capsys):
    (tmp_path / "out").write_text("a file")
    refused(run_glue.cli, argv("--task_name", "sst2", "--do_train"), capsys, "is a file, not a directory")


def test_non_empty_output_dir(argv, rows, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("keep")
    train = write(tmp_path / "train.csv", rows)
    refused(run_glue.cli, argv("--task_name", "sst2", "--train_file", train, "--do_train"), capsys,
            "is not empty", "--overwrite_output_dir")


def test_train_flag_without_train_file(argv, rows, tmp_path, capsys):
    val = write(tmp_path / "val.csv", rows)
    refused(run_glue.cli, argv("--task_name", "sst2", "--validation_file", val, "--do_train"), capsys,
            "--do_train needs a train split: pass --train_file")


def test_arguments_file_that_is_not_json(tmp_path, capsys):
    bad = tmp_path / "args.json"
    bad.write_text("{model_name_or_path: x}")
    refused(run_glue.cli, [str(bad)], capsys, f"{bad} is not a JSON object of arguments")


def test_model_with_return_dict_false(argv, tiny_bert_dir, rows, tmp_path, capsys):
    tupled = tmp_path / "tupled"
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
    model.config.return_dict = False
    model.save_pretrained(tupled)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(tupled)
    train = write(tmp_path / "train.csv", rows)
    refused(run_glue.cli, argv("--task_name", "sst2", "--train_file", train, "--do_train", "--model_name_or_path",
                               str(tupled)), capsys, "return_dict")


def test_a_model_the_mask_cannot_take_is_refused_before_training(argv, tiny_bert_dir, rows, tmp_path, capsys):
    """A GPT-2 classifier without pad_token_id cannot find the token it pools in a padded batch."""
    gpt = tmp_path / "gpt"
    config = GPT2Config(vocab_size=1000, n_embd=32, n_layer=2, n_head=2, n_positions=128, num_labels=2)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(gpt)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(gpt)
    train = write(tmp_path / "train.csv", rows)
    refused(run_glue.cli, argv("--task_name", "sst2", "--train_file", train, "--do_train", "--model_name_or_path",
                               str(gpt), "--masksub_type", "mask"), capsys, "pad_token_id", "drop or path works",
            "register_family")


# ---- the error path itself --------------------------------------------------------------------------
def test_traceback_flag_and_env_var_show_the_traceback(argv, monkeypatch, capsys):
    flags = argv("--task_name", "sst2", "--do_train", "--learning_rate", "-1")
    with pytest.raises(ValueError, match="--learning_rate must be a positive number"):
        run_glue.cli(flags + ["--traceback"])
    monkeypatch.setenv("MASKSUB_HF_TRACEBACK", "1")
    with pytest.raises(ValueError, match="--learning_rate must be a positive number"):
        run_glue.cli(flags)


def test_help_mentions_traceback(capsys):
    with pytest.raises(SystemExit) as done:
        run_glue.cli(["--help"])
    assert done.value.code == 0 and "--traceback" in capsys.readouterr().out


# ---- labels named or written carelessly ------------------------------------------------------------
def test_a_label_column_name_the_file_lacks_is_refused(argv, rows, tmp_path, capsys):
    train = write(tmp_path / "train.json", [dict(r, verdict=r["label"]) for r in rows])  # has 'label' too
    refused(run_glue.cli, argv("--train_file", train, "--do_train", "--label_column_name", "sentiment"), capsys,
            "--label_column_name 'sentiment' is not a column of", train, "label, verdict")
    plain = write(tmp_path / "plain.json", [{"sentence": r["sentence"], "verdict": r["label"]} for r in rows])
    refused(run_glue.cli, argv("--train_file", plain, "--do_train", "--label_column_name", "sentiment"), capsys,
            "--label_column_name 'sentiment' is not a column of", "sentence, verdict")


def test_label_names_with_spaces_around_them_are_stripped_with_a_warning(argv, rows, tmp_path):
    names = [dict(r, label=["neg", "pos"][r["label"]] + (" " if i % 3 == 0 else "")) for i, r in enumerate(rows)]
    train = write(tmp_path / "train.json", names)
    with pytest.warns(InputWarning) as record:
        run_glue.main(argv("--train_file", train, "--do_train"))
    warned(record, train, "have spaces around them", "stripped")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert sorted(config["id2label"].values()) == ["neg", "pos"]  # two classes, not four


# ---- flags that would fail only after training started ---------------------------------------------
def test_a_metric_the_task_does_not_log_is_refused_before_training(argv, rows, tmp_path, capsys):
    train = write(tmp_path / "train.json", rows)
    refused(run_glue.cli, argv("--task_name", "sst2", "--train_file", train, "--do_train", "--metric_for_best_model",
                               "f1"), capsys, "--metric_for_best_model f1: the evaluation here logs accuracy and loss")
    assert not (tmp_path / "out" / "train_results.json").exists()


def test_a_reporting_integration_that_is_not_installed_is_named(argv, rows, tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("tensorboard") else real(name, *a))
    train = write(tmp_path / "train.json", rows)
    flags = [a for a in argv("--task_name", "sst2", "--train_file", train, "--do_train") if a != "none"]
    flags[flags.index("--report_to") + 1:flags.index("--report_to") + 1] = ["tensorboard"]
    refused(run_glue.cli, flags, capsys, "--report_to tensorboard needs the tensorboard package", "pip install tensorboard")


@pytest.mark.parametrize("length, refused_too", [(1, True), (2, True), (3, False)])
def test_a_max_seq_length_without_room_for_text(argv, rows, tmp_path, capsys, length, refused_too):
    train = write(tmp_path / "train.json", rows)
    flags = argv("--task_name", "sst2", "--train_file", train, "--do_train", "--max_seq_length", str(length))
    if refused_too:
        refused(run_glue.cli, flags, capsys, f"--max_seq_length {length} leaves no room for text",
                "adds 2 special tokens")
        return
    with pytest.warns(InputWarning) as record:
        run_glue.main(flags)
    warned(record, "--max_seq_length 3 keeps at most 1 text token(s) per row")


def test_an_unclosed_quote_that_merges_rows_is_named(argv, rows, tmp_path):
    lines = table(rows).splitlines()
    lines[5] = '"' + lines[5]  # a quote opened on file line 6 ...
    lines[9] = lines[9].replace(",", '",', 1)  # ... closed on line 10: the lines between become one cell
    train = csv_text(tmp_path / "train.csv", "\n".join(lines) + "\n")
    with pytest.warns(InputWarning) as record:
        run_glue.main(argv("--task_name", "sst2", "--train_file", train, "--do_train"))
    warned(record, train, "rows from 24 lines after the header", "line 6 opens a quote that is never closed")
