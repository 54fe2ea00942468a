"""A run killed (SIGKILL) while writing a checkpoint, rerun with the same command, ends with the weights of
an uninterrupted run: the half-written checkpoint is skipped, with the reason, for the last complete one."""
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import run_glue
from masksub_hf.checkpoints import incomplete_reason, last_complete_checkpoint
from tests.test_glue import single, write

ROOT = Path(__file__).resolve().parent.parent


def command(tiny_bert_dir, files, out):
    return ["--model_name_or_path", str(tiny_bert_dir), "--task_name", "sst2", "--train_file", files,
            "--do_train", "--output_dir", str(out), "--max_steps", "4", "--save_strategy", "steps", "--save_steps", "2",
            "--per_device_train_batch_size", "8", "--learning_rate", "1e-3", "--logging_steps", "1",
            "--disable_tqdm", "true", "--seed", "0", "--report_to", "none", "--masksub_type", "mask"]


def test_sigkill_during_a_save_then_rerun_ends_with_the_uninterrupted_weights(tiny_bert_dir, movie_reviews, tmp_path,
                                                                              caplog):
    train = write(tmp_path / "train.csv", single(movie_reviews, 0, 48))
    run_glue.main(command(tiny_bert_dir, train, tmp_path / "whole"))
    whole = load_file(tmp_path / "whole" / "model.safetensors")

    out = tmp_path / "killed"
    threads = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}  # bit-equal needs the same threads
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "kill_during_save.py"), "4", "run_glue",
                           *command(tiny_bert_dir, train, out)], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env=threads)
    assert done.returncode == -9, done.stderr[-2000:]
    assert (out / "checkpoint-4" / "model.safetensors").exists()  # killed half-way through checkpoint-4
    assert incomplete_reason(str(out / "checkpoint-4")) == "it has no trainer_state.json (the save was interrupted)"
    assert incomplete_reason(str(out / "checkpoint-2")) is None and not (out / "model.safetensors").exists()

    with caplog.at_level(logging.INFO):
        run_glue.main(command(tiny_bert_dir, train, out))  # the same command again
    assert f"Skipping {out / 'checkpoint-4'}: it has no trainer_state.json (the save was interrupted)." in caplog.text
    assert f"Resuming from {out / 'checkpoint-2'}, the last complete checkpoint." in caplog.text
    resumed = load_file(out / "model.safetensors")
    assert resumed.keys() == whole.keys()
    for name, tensor in whole.items():
        assert torch.equal(tensor, resumed[name]), name
    assert incomplete_reason(str(out / "checkpoint-4")) is None  # rewritten whole this time


def test_truncated_state_and_missing_weights_are_incomplete_and_explicit_paths_are_checked(tmp_path):
    for step, files in ((1, {"model.safetensors": b"x", "trainer_state.json": b"{}"}),
                        (2, {"model.safetensors": b"x", "trainer_state.json": b'{"global_st'}),
                        (3, {"trainer_state.json": b"{}"})):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        for name, content in files.items():
            (folder / name).write_bytes(content)
    assert "truncated" in incomplete_reason(str(tmp_path / "checkpoint-2"))
    assert incomplete_reason(str(tmp_path / "checkpoint-3")) == "it holds no model weights"
    assert last_complete_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-1")
    from tasks.cli import LOCK_FILE, resume_checkpoint

    with pytest.raises(ValueError, match="checkpoint-2 cannot be resumed from: its trainer_state.json is truncated"):
        resume_checkpoint(str(tmp_path), str(tmp_path / "checkpoint-2"), overwrite=False)
    # only half-written checkpoints and nothing else: the rerun starts afresh instead of refusing
    only = tmp_path / "only"
    (only / "checkpoint-2").mkdir(parents=True)
    (only / "checkpoint-2" / "model.safetensors").write_bytes(b"x")
    assert resume_checkpoint(str(only), None, overwrite=False) is None
    assert sorted(os.listdir(only)) == [LOCK_FILE, "checkpoint-2"]  # left as it was, and taken by this run
