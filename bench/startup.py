"""How long `--help` takes, against the floor every Trainer script pays (the Hugging Face example scripts
included): importing Trainer and TrainingArguments, which the help's flags need.

Each command runs as a fresh process, in interleaved rounds (every command once per round, in a rotated order),
so a change of load on a shared machine hits all of them alike; each ratio is the median over rounds of
(command / that import in the same round).

    python bench/startup.py            # 5 rounds
"""
import argparse
import statistics
import subprocess
import sys
import time

ROOT = __file__.rsplit("/bench/", 1)[0]
FLOOR = "import Trainer, TrainingArguments"
COMMANDS = {
    FLOOR: [sys.executable, "-c", "from transformers import Trainer, TrainingArguments"],
    "run_glue.py --help": [sys.executable, "run_glue.py", "--help"],
    "run_image.py --help": [sys.executable, "run_image.py", "--help"],
    "run_clip.py --help": [sys.executable, "run_clip.py", "--help"],
}


def seconds(command) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    names = list(COMMANDS)
    times = {name: [] for name in names}
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(seconds(COMMANDS[name]))
    print("| command | median s | x the import of Trainer, TrainingArguments (median of per-round ratios) |")
    print("|---|---:|---:|")
    for name in names:
        ratio = statistics.median(t / f for t, f in zip(times[name], times[FLOOR]))
        print(f"| {name} | {statistics.median(times[name]):.2f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
