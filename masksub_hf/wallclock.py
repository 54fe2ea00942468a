"""Wall-clock of a training run, kept beside the logs rather than in them.

Time-to-accuracy comparisons need the seconds since training began at each logged step, but a
wall-clock key inside `log_history` makes a resumed run's history differ from the uninterrupted one
(Trainer's own resume tests compare them), and `masksub_type none` must log exactly what Trainer logs.
So the seconds go to OUTPUT_DIR/wallclock.json, one entry per log call: {"step", "elapsed_s"}; a
resumed run appends its own entries, counting on from the time its checkpoint had reached.
`with_wallclock` puts them back beside the log entries for plots and benchmarks.
"""
import json
import os
import time
from typing import Dict, List

from transformers import TrainerCallback

FILE = "wallclock.json"


class WallClock(TrainerCallback):
    """Writes OUTPUT_DIR/wallclock.json (process zero) each time Trainer logs during training."""

    def __init__(self):
        self.started, self.offset, self.entries, self.path = None, 0.0, [], None

    def on_train_begin(self, args, state, control, **kwargs):
        self.path = os.path.join(args.output_dir, FILE)
        self.started, self.offset = time.perf_counter(), 0.0
        self.entries = read(args.output_dir) if state.global_step else []  # resuming: keep the earlier entries
        self.entries = [e for e in self.entries if e["step"] <= state.global_step]
        if self.entries:
            self.offset = self.entries[-1]["elapsed_s"]

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.started is None or not state.is_world_process_zero:
            return
        self.entries.append({"step": state.global_step,
                             "elapsed_s": round(self.offset + time.perf_counter() - self.started, 3)})
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path + ".tmp", "w") as f:
            json.dump(self.entries, f)
        os.replace(self.path + ".tmp", self.path)

    def on_train_end(self, args, state, control, **kwargs):
        self.started = None  # a later evaluate() is not part of the training clock


def read(run_dir: str) -> List[Dict]:
    """The run's wall-clock entries, [] where it has none."""
    try:
        with open(os.path.join(run_dir, FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return []


def with_wallclock(history: List[Dict], run_dir: str) -> List[Dict]:
    """log_history entries with `elapsed_s` added from wallclock.json: the seconds of the last log call at that
    entry's step (a train log and an evaluation at one step are a moment apart)."""
    at_step = {e["step"]: e["elapsed_s"] for e in read(run_dir)}
    return [dict(entry, elapsed_s=at_step[entry["step"]]) if "elapsed_s" not in entry and entry.get("step") in at_step
            else entry for entry in history]
