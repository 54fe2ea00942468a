"""The output directory belongs to one run: a second writer is refused, and --overwrite_output_dir leaves no
checkpoint of an earlier run for a later rerun to resume (tasks/cli.py)."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.cli import LOCK_FILE, resume_checkpoint


def fake_checkpoint(path: Path):
    path.mkdir(parents=True)
    (path / "trainer_state.json").write_text("{}")
    (path / "model.safetensors").write_bytes(b"weights")


def test_overwrite_removes_the_earlier_runs_checkpoints(tmp_path, caplog):
    for step in (4, 8):
        fake_checkpoint(tmp_path / f"checkpoint-{step}")
    (tmp_path / "notes.txt").write_text("kept")
    with caplog.at_level("WARNING"):
        assert resume_checkpoint(str(tmp_path), None, overwrite=True) is None
    assert not any(n.startswith("checkpoint-") for n in os.listdir(tmp_path))
    assert (tmp_path / "notes.txt").exists()
    assert "removed 2 checkpoint(s) of an earlier run" in caplog.text
    fake_checkpoint(tmp_path / "checkpoint-2")  # this run's own checkpoint is what a rerun resumes
    assert resume_checkpoint(str(tmp_path), None, overwrite=False) == str(tmp_path / "checkpoint-2")


def test_a_second_writer_is_refused_with_one_line(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[2]); from tasks.cli import lock_output_dir; "
         "lock_output_dir(sys.argv[1]); print('locked', flush=True); time.sleep(60)", str(tmp_path),
         str(Path(__file__).parents[1])], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ValueError, match=rf"output directory {tmp_path} is in use by a run still going "
                                             rf"\(pid {holder.pid}\); wait for it to finish"):
            resume_checkpoint(str(tmp_path), None, overwrite=True)
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    assert resume_checkpoint(str(tmp_path), None, overwrite=True) is None  # free once that run has ended
    assert (tmp_path / LOCK_FILE).read_text() == f"pid {os.getpid()}"
