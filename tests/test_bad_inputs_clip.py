"""Bad-input catalogue, run_clip.py: exit status 2 and one line naming the input and the fix, or a named
warning for contrastive data that trains but measures nothing (empty captions, tiny evaluation sets)."""
import pytest

import run_clip
from tasks import clip as data
from tasks.cli import InputWarning
from tests.catalogue import refused, warned
from tests.test_clip import _argv, configs, digit_csv  # noqa: F401  (fixtures)


def rows_of(digit_csv, n=None):
    header, *rows = digit_csv.read_text().splitlines()
    return header, [f"{digit_csv.parent / r}" for r in rows[:n]]  # absolute image paths


def tsv(tmp_path, header, rows, name="pairs.tsv", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(("\n".join([header] + rows) + "\n").encode(encoding))
    return path


def test_empty_captions_are_dropped_with_a_warning_not_trained_as_nan(digit_csv, tmp_path):
    header, rows = rows_of(digit_csv, 20)
    rows[3] = rows[3].split("\t")[0] + "\t\tthree"
    rows[4] = rows[4].split("\t")[0] + "\tNA\tfour"  # a caption that pandas would read as NaN
    path = tsv(tmp_path, header, rows)
    with pytest.warns(InputWarning) as record:
        pairs = data.csv_pairs(str(path), "filepath", "title", "\t", "label")
    warned(record, str(path), "dropped 1 of 20 pair(s) with an empty caption")
    assert len(pairs) == 19 and "NA" in pairs.captions and "nan" not in pairs.captions


def test_all_captions_empty(configs, digit_csv, tmp_path, capsys):  # noqa: F811
    header, rows = rows_of(digit_csv, 20)
    path = tsv(tmp_path, header, [r.split("\t")[0] + "\t \tone" for r in rows])
    refused(run_clip.cli, _argv(configs["tiny-vit"], path, tmp_path / "o"), capsys, str(path), "every caption is empty")


def test_batch_size_one_makes_the_contrastive_loss_zero(configs, digit_csv, tmp_path, capsys):  # noqa: F811
    refused(run_clip.cli, _argv(configs["tiny-vit"], digit_csv, tmp_path / "o", "--per_device_train_batch_size", "1"),
            capsys, "--per_device_train_batch_size 1", "contrastive loss is 0", "at least 2")


def test_one_pair_hold_out(configs, digit_csv, tmp_path, capsys):  # noqa: F811
    header, rows = rows_of(digit_csv, 12)
    path = tsv(tmp_path, header, rows)
    refused(run_clip.cli, _argv(configs["tiny-vit"], path, tmp_path / "o"), capsys,
            "the evaluation set has 1 pair(s)", "always 1.0", "--val_data")


def test_small_evaluation_set_and_a_last_batch_of_one_warn(digit_csv):  # noqa: F811
    pairs = data.csv_pairs(str(digit_csv), "filepath", "title", "\t", "label")
    train, val = data.split_pairs(pairs, 0.1, 0)  # 87 train / 9 held out
    model_args, _, _, training_args = run_clip.parse_args(["--train_data", "x", "--per_device_train_batch_size", "2",
                                                           "--output_dir", "unused", "--use_cpu"])
    with pytest.warns(InputWarning) as record:
        data.check_pairs((train, val), model_args.mode, training_args)
    warned(record, "only 9 pairs: recall@10 is 1.0 by construction")
    warned(record, "87 training pairs in batches of 2 leave a last batch of one pair", "--dataloader_drop_last")


def test_a_comma_file_is_read_with_the_detected_separator_and_a_note(configs, digit_csv, tmp_path, capsys):  # noqa: F811
    header, rows = rows_of(digit_csv, 20)
    path = tsv(tmp_path, header.replace("\t", ","), [r.replace("\t", ",") for r in rows], "pairs.csv")
    with pytest.warns(InputWarning) as record:
        metrics = run_clip.main(_argv(configs["tiny-vit"], path, tmp_path / "o"))
    warned(record, str(path), "columns separated by commas (detected from its header")
    assert (tmp_path / "o" / "all_results.json").exists() and "eval_zeroshot_accuracy" in metrics  # it trained
    # a separator given by hand that the header does not have is still refused, with the fix
    refused(run_clip.cli, _argv(configs["tiny-vit"], path, tmp_path / "p", "--csv_separator", "\t"), capsys,
            str(path), "pass --csv_separator ','")


def test_latin1_file(configs, digit_csv, tmp_path, capsys):  # noqa: F811
    header, rows = rows_of(digit_csv, 20)
    path, caption, label = rows[1].split("\t")
    rows[1] = f"{path}\t{caption} (café)\t{label}"
    path = tsv(tmp_path, header, rows, encoding="latin-1")
    refused(run_clip.cli, _argv(configs["tiny-vit"], path, tmp_path / "o"), capsys, str(path),
            "is not utf-8 text (byte 0xe9 on line 3)", "--csv_encoding")


def test_header_only_file(configs, digit_csv, tmp_path, capsys):  # noqa: F811
    header, _ = rows_of(digit_csv, 0)
    path = tsv(tmp_path, header, [])
    refused(run_clip.cli, _argv(configs["tiny-vit"], path, tmp_path / "o"), capsys, str(path), "but no rows")


def test_empty_file(configs, tmp_path, capsys):  # noqa: F811
    (tmp_path / "pairs.tsv").write_bytes(b"")
    refused(run_clip.cli, _argv(configs["tiny-vit"], tmp_path / "pairs.tsv", tmp_path / "o"), capsys,
            f"--train_data {tmp_path / 'pairs.tsv'} is empty")


def test_classify_with_a_single_class(configs, digit_csv, tmp_path, capsys):  # noqa: F811
    header, rows = rows_of(digit_csv, 20)
    path = tsv(tmp_path, header, [r.rsplit("\t", 1)[0] + "\tone" for r in rows])
    refused(run_clip.cli, _argv(configs["tiny-vit"], path, tmp_path / "o", "--mode", "classify"), capsys,
            "hold 1 class", "--mode classify needs at least two")


@pytest.mark.parametrize("flags, message", [
    (["--val_fraction", "0"], "--val_fraction must be between 0 and 1"),
    (["--max_bad_images", "1.5"], "--max_bad_images is a share in [0, 1)"),
    (["--train_num_samples", "0"], "--train_num_samples must be at least 1"),
    (["--learning_rate", "0"], "--learning_rate must be a positive number; got 0.0"),
    (["--mode", "generate"], "argument --mode: invalid choice: 'generate'"),
])
def test_settings_refused_before_any_loading(tmp_path, flags, message, capsys):
    refused(run_clip.cli, _argv("never-built.json", tmp_path / "never-read.tsv", tmp_path / "o", *flags), capsys,
            message)


def test_non_empty_output_dir_without_a_checkpoint(configs, digit_csv, tmp_path, capsys):  # noqa: F811
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "results.txt").write_text("keep")
    refused(run_clip.cli, _argv(configs["tiny-vit"], digit_csv, tmp_path / "o"), capsys,
            "is not empty", "--overwrite_output_dir")


def test_empty_class_cells(configs, digit_csv, tmp_path, capsys):  # noqa: F811
    header, rows = rows_of(digit_csv, 20)
    rows[2] = rows[2].rsplit("\t", 1)[0] + "\t"
    path = tsv(tmp_path, header, rows)
    refused(run_clip.cli, _argv(configs["tiny-vit"], path, tmp_path / "o"), capsys, str(path),
            "1 row(s) have an empty --csv_label_key 'label' cell")


def test_an_unclosed_quote_that_merges_captions_is_named(configs, digit_csv, tmp_path):  # noqa: F811
    header, rows = rows_of(digit_csv, 20)
    path, caption, label = rows[2].split("\t")
    rows[2] = f'{path}\t"{caption}\t{label}'  # opened on file line 4, closed on line 7: the rows between merge
    path, caption, label = rows[5].split("\t")
    rows[5] = f'{path}\t{caption}"\t{label}'
    csv = tsv(tmp_path, header, rows)
    with pytest.warns(InputWarning) as record:
        try:
            run_clip.main(_argv(configs["tiny-vit"], csv, tmp_path / "o"))
        except ValueError:  # the merged cell is no image path; the warning has already named the cause
            pass
    warned(record, str(csv), "rows from 20 lines after the header", "line 4 opens a quote")
