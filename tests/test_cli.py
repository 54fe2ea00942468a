"""The entry scripts end bad input with one line, not a traceback."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("script, argv, message", [
    ("run_image.py", ["--train_dir", "{empty}", "--do_train"], "holds no image files"),
    ("run_clip.py", ["--train_data", "{csv}"], "pass --csv_separator ','"),
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
