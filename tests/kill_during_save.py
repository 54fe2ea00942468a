"""Run an entry script's main(argv) and SIGKILL this process in the middle of writing a checkpoint:
after the weights of checkpoint-N are written, before its optimizer state and trainer_state.json.

    python tests/kill_during_save.py N run_glue --output_dir ... (the script's own flags)
"""
import importlib
import os
import signal
import sys

from transformers import Trainer

if __name__ == "__main__":
    step, script, argv = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    real = Trainer._save_optimizer_and_scheduler

    def dying(self, output_dir):
        if os.path.basename(output_dir) == f"checkpoint-{step}":
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, output_dir)

    Trainer._save_optimizer_and_scheduler = dying
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    importlib.import_module(script).main(argv)
