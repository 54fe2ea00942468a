"""Bad-input catalogue, run_image.py and its image conversion: exit status 2 and one line naming the input
and the fix, a named warning or count for what is legal but suspicious, and images that are not 8-bit RGB
converted faithfully (checked pixel by pixel)."""
import json

import numpy as np
import pytest
from PIL import Image

import run_image
from tasks import image as data
from tests.catalogue import refused
from tests.test_image import TINY_VIT, write_folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory, digits):
    root = tmp_path_factory.mktemp("catalogue-digits")
    return write_folder(root / "train", digits, 8), write_folder(root / "val", digits, 3, offset=50)


def argv(tmp_path, train, val, *extra):
    return ["--train_dir", str(train), "--validation_dir", str(val), "--output_dir", str(tmp_path / "out"),
            "--cache_dir", str(tmp_path / "cache"), "--max_steps", "1", "--per_device_train_batch_size", "8",
            "--per_device_eval_batch_size", "16", "--save_strategy", "no", "--report_to", "none", "--disable_tqdm",
            "true", "--seed", "0", "--model_type", "vit", "--config_overrides", TINY_VIT, *extra]


def copy_folder(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


# ---- unreadable files --------------------------------------------------------------------------------
def test_corrupt_and_empty_files_past_the_threshold(folders, tmp_path, capsys):
    train = copy_folder(folders[0], tmp_path / "train")
    (train / "digit0" / "zero-bytes.png").write_bytes(b"")
    (train / "digit1" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    refused(run_image.cli, argv(tmp_path, train, folders[1]), capsys, str(train), "2 of 26 images cannot be read",
            "--max_bad_images")


def test_one_corrupt_file_under_the_threshold_is_skipped_and_counted(folders, tmp_path, capsys):
    train = copy_folder(folders[0], tmp_path / "train")
    (train / "digit7" / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    metrics = run_image.main(argv(tmp_path, train, folders[1], "--max_bad_images", "0.1"))
    assert f"{train}: skipped 1 of 25 images that could not be read (truncated.png)" in capsys.readouterr().out
    assert metrics["train_samples"] == 24


# ---- classes -----------------------------------------------------------------------------------------
def test_a_single_class(folders, tmp_path, capsys):
    train = tmp_path / "train"
    copy_folder(folders[0] / "digit0", train / "digit0")
    refused(run_image.cli, argv(tmp_path, train, train), capsys, "has 1 class (digit0)", "at least two")


def test_validation_only_class(folders, tmp_path, capsys):
    train = copy_folder(folders[0], tmp_path / "train")
    import shutil

    shutil.rmtree(train / "digit7")
    refused(run_image.cli, argv(tmp_path, train, folders[1]), capsys, "digit7 have validation images but no training")


def test_a_class_the_held_out_share_took_whole_is_not_blamed_on_validation_images(folders, tmp_path, capsys):
    train = copy_folder(folders[0], tmp_path / "train")
    for image in sorted((train / "digit7").iterdir())[1:]:  # one image of digit7 left, no --validation_dir
        image.unlink()
    seed = next(s for s in range(40) if _held_out_whole(train, tmp_path, s))  # digit7's only image held out
    given = argv(tmp_path, train, folders[1], "--train_val_split", "0.5")
    given[given.index("--seed") + 1] = str(seed)
    given = given[:given.index("--validation_dir")] + given[given.index("--validation_dir") + 2:]
    refused(run_image.cli, given, capsys, "digit7 have no training image left", "--train_val_split 0.5",
            "--validation_dir")


def _held_out_whole(train, tmp_path, seed):
    try:
        data.load_splits(None, None, str(train), None, train_val_split=0.5, seed=seed, cache_dir=str(tmp_path / "c"))
    except ValueError as err:
        assert "have validation images" not in str(err)  # the user gave none
        return "digit7" in str(err)
    return False


def test_classes_are_logged_in_one_line(folders, tmp_path, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="run_image"):
        run_image.main(argv(tmp_path, *folders))
    assert "columns: image 'image', label 'label'; classes: 'digit0'->0, 'digit1'->1, 'digit7'->2" in caplog.text


# ---- sizes and configs -------------------------------------------------------------------------------
def test_image_smaller_than_the_patch(folders, tmp_path, capsys):
    refused(run_image.cli, argv(tmp_path, *folders, "--image_size", "2"), capsys,
            "images of 2x2 pixels are smaller than the model's 4-pixel patches", "--image_size")


def test_image_size_the_vit_was_not_built_for(folders, tmp_path, capsys):
    refused(run_image.cli, argv(tmp_path, *folders, "--image_size", "32"), capsys,
            "the model cannot take 3x32x32 inputs", "--config_overrides")


def test_json_override_with_a_typo(folders, tmp_path, capsys):
    overrides = json.dumps({"image_size": 16, "patch_size": 4, "hiden_size": 16})
    refused(run_image.cli, argv(tmp_path, *folders, "--config_overrides", overrides), capsys,
            "'hiden_size' (did you mean 'hidden_size'?) is not a field of the vit config")


def test_key_value_override_with_a_typo(folders, tmp_path, capsys):
    refused(run_image.cli, argv(tmp_path, *folders, "--config_overrides", "hiden_size=16"), capsys,
            "--config_overrides:", "hiden_size")


def test_override_that_is_not_json(folders, tmp_path, capsys):
    refused(run_image.cli, argv(tmp_path, *folders, "--config_overrides", "{image_size: 16}"), capsys,
            "--config_overrides is not valid JSON")


@pytest.mark.parametrize("flags, message", [
    (["--train_val_split", "1.5"], "--train_val_split must be between 0 and 1"),
    (["--max_bad_images", "2"], "--max_bad_images is a share in [0, 1)"),
    (["--per_device_eval_batch_size", "0"], "--per_device_eval_batch_size must be at least 1"),
    (["--max_eval_samples", "0"], "--max_eval_samples must be at least 1"),
    (["--gradient_accumulation_steps", "0"], "--gradient_accumulation_steps must be at least 1"),
    (["--max_grad_norm", "-1"], "--max_grad_norm must be 0 (no clipping) or positive"),
    (["--compare_baseline", "--masksub_type", "none"], "--compare_baseline trains a baseline beside MaskSub"),
])
def test_settings_refused_before_any_loading(tmp_path, flags, message, capsys):
    refused(run_image.cli, argv(tmp_path, tmp_path / "none", tmp_path / "none", *flags), capsys, message)


def test_missing_arguments_file(tmp_path, capsys):
    refused(run_image.cli, [str(tmp_path / "args.json")], capsys, "args.json: no such arguments file")


# ---- non-finite training at the command line ----------------------------------------------------------
def test_exploding_learning_rate_ends_with_status_3_and_one_line(folders, tmp_path, capsys):
    line = refused(run_image.cli, argv(tmp_path, *folders, "--learning_rate", "1e6", "--max_grad_norm", "0",
                                       "--max_steps", "12", "--per_device_train_batch_size", "4"), capsys,
                   "--learning_rate", status=3)
    assert line.startswith("run_image.py: error: step ") and " is " in line and "no checkpoint was written" in line
    assert not (tmp_path / "out" / "model.safetensors").exists()  # the final save of a broken model never happens


# ---- images that are not 8-bit RGB: converted faithfully -----------------------------------------------
def saved(tmp_path, image, name):
    image.save(tmp_path / name)
    return Image.open(tmp_path / name)


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    ramp = np.array([[0, 257 * 64, 257 * 128, 65535]], dtype=np.uint16)
    image = saved(tmp_path, Image.fromarray(ramp), "deep.png")
    assert image.mode.startswith("I")
    assert np.asarray(data.to_mode(image, "L")).tolist() == [[0, 64, 128, 255]]


def test_float_tiff_in_0_1_is_not_black(tmp_path):
    image = saved(tmp_path, Image.fromarray(np.array([[0.0, 0.25, 1.0]], dtype=np.float32), "F"), "float.tif")
    assert image.mode == "F"
    assert np.asarray(data.to_mode(image, "L")).tolist() == [[0, 64, 255]]


def test_float_tiff_with_inf_is_refused_by_name(tmp_path):
    image = saved(tmp_path, Image.fromarray(np.array([[0.0, np.inf]], dtype=np.float32), "F"), "inf.tif")
    with pytest.raises(ValueError, match="inf.tif: a float image with inf/NaN pixels"):
        data.to_mode(image, "RGB")


def test_cmyk_converts_to_its_colours(tmp_path):
    cyan = Image.new("CMYK", (2, 2), (255, 0, 0, 0))
    assert data.to_mode(cyan, "RGB").getpixel((0, 0)) == (0, 255, 255)


def test_transparency_is_composited_on_white(tmp_path):
    rgba = Image.new("RGBA", (2, 1), (0, 0, 0, 0))  # fully transparent black pixels
    rgba.putpixel((1, 0), (255, 0, 0, 255))
    assert list(data.to_mode(rgba, "RGB").getdata()) == [(255, 255, 255), (255, 0, 0)]
    assert list(data.to_mode(rgba.convert("LA"), "L").getdata())[0] == 255


def test_palette_with_a_transparent_colour(tmp_path):
    palette = Image.new("P", (2, 1), 0)
    palette.putpalette([0, 0, 0, 0, 128, 0] + [0] * 762)
    palette.putpixel((1, 0), 1)
    palette.info["transparency"] = 0
    image = saved(tmp_path, palette, "palette.png")
    assert list(data.to_mode(image, "RGB").getdata()) == [(255, 255, 255), (0, 128, 0)]
