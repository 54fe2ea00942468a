"""What the three entry scripts share about ending well: one error path, early checks, resuming.

- `run_cli`: a user error (bad flag, file, column, label, model, setting) ends the program with ONE
  line, `prog: error: message`, and exit status 2; a run stopped on a non-finite loss or gradient
  ends with one line and status 3. `--traceback` (or MASKSUB_HF_TRACEBACK=1) shows the full traceback.
- `ArgumentParser`: HfArgumentParser whose parse errors and unknown flags are one-line user errors
  (with the closest known flag), instead of a usage dump of every TrainingArguments field.
- `check_training_args`: what can be checked before any data or model is loaded.
- `resume_checkpoint`: the Hugging Face scripts' rule (rerunning a command resumes it), from the
  last COMPLETE checkpoint (masksub_hf/checkpoints.py); one writer per output_dir (a lock), and
  --overwrite_output_dir removes an earlier run's checkpoints so none of them is resumed later.
"""
import argparse
import difflib
import errno
import fcntl
import shutil
import logging
import math
import os
import sys
import sysconfig
import tempfile
import traceback
import warnings
from typing import Callable, Dict, List, Optional, Set, Tuple

from transformers import HfArgumentParser

from masksub_hf.checkpoints import checkpoints, incomplete_reason, last_complete_checkpoint

logger = logging.getLogger(__name__)

USER_ERRORS = (ValueError, OSError)  # OSError: missing files, unwritable paths, models that cannot be loaded
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OWN_CODE = tuple(os.path.join(ROOT, name) for name in ("masksub_hf" + os.sep, "tasks" + os.sep, "run_"))
TRACEBACK_FLAG = "--traceback"
EXIT_USER_ERROR = 2
EXIT_NONFINITE = 3


class InputWarning(UserWarning):
    """Legal but suspicious input (dropped empty rows, a clamped length, a tiny evaluation set)."""


class UsageError(ValueError):
    """A command line that cannot be parsed."""


def warn(message: str) -> None:
    warnings.warn(message, InputWarning, stacklevel=2)


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    if isinstance(err, KeyError) or not text:
        text = f"{type(err).__name__}: {text}"
    return text


def _split_traceback(argv: List[str]):
    """--traceback is ours (not a TrainingArguments field), taken out before the dataclasses parse the rest;
    a bare --debug, which Trainer's --debug (debug features, one or more values) would refuse with argparse's
    'expected at least one argument', is refused naming this flag."""
    if argv and argv[-1] == "--debug" or any(a == "--debug" and b.startswith("--") for a, b in zip(argv, argv[1:])):
        raise UsageError("--debug is Trainer's (--debug underflow_overflow | tpu_metrics_debug); for the full "
                         f"traceback of an error, use {TRACEBACK_FLAG} (or set MASKSUB_HF_TRACEBACK=1)")
    kept = [arg for arg in argv if arg != TRACEBACK_FLAG]
    return kept, len(kept) != len(argv)


def run_cli(main, prog: str, argv: Optional[List[str]] = None):
    """Call main(argv) and end bad input with one line on stderr: status 2 for user errors (flags, files,
    columns, labels, models, settings, a perturbation the model did not take, a library refusing the data before
    training: user_caused; a full disk, whatever library raised it), 3 for a run stopped on a non-finite loss or
    gradient norm, 130 on Ctrl-C; a defect keeps its traceback, said to be one. With --traceback or
    MASKSUB_HF_TRACEBACK=1 every traceback is shown."""
    from masksub_hf.nonfinite import NonFiniteTrainingError

    debug = bool(os.environ.get("MASKSUB_HF_TRACEBACK"))
    argv = list(sys.argv[1:] if argv is None else argv)
    show = warnings.formatwarning
    warnings.formatwarning = lambda message, category, *a, **k: (
        f"{prog}: warning: {message}\n" if issubclass(category, InputWarning) else show(message, category, *a, **k))
    try:
        argv, asked = _split_traceback(argv)
        debug = debug or asked
        return main(argv)
    except NonFiniteTrainingError as err:
        if debug:
            raise
        print(f"{prog}: error: {one_line(err)}", file=sys.stderr)
        sys.exit(EXIT_NONFINITE)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted; rerun the same command to resume from the last checkpoint.", file=sys.stderr)
        sys.exit(130)
    except Exception as err:  # noqa: BLE001  whose error it is depends on where it comes from (user_caused)
        if debug:
            raise
        if disk_full(err):  # a full disk surfaces as whatever the writing library raises
            _disk_full_exit(prog, err)
        library = user_caused(err)
        if library is None:
            print(f"{prog}: internal error: {type(err).__name__} raised where the input had passed every check: a "
                  "defect, not your input; the traceback follows (please report it).", file=sys.stderr)
            raise
        text = one_line(err)
        if library:  # another library's own error type: named, with the library
            text = f"{text if text.startswith(type(err).__name__) else type(err).__name__ + ': ' + text} (raised by " \
                   f"{library} reading what it was given)"
        hint = "" if isinstance(err, UsageError) else f" ({TRACEBACK_FLAG} shows the traceback)"
        print(f"{prog}: error: {text}{hint}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    finally:
        warnings.formatwarning = show


def _raised_by(err: BaseException) -> Tuple[str, str]:
    """(file, library) of the frame that raised err, the innermost of its traceback; the library is the installed
    package or standard-library module that file belongs to ("" for neither: this project, a user's own code)."""
    frames = traceback.extract_tb(err.__traceback__)
    if not frames:
        return "", ""
    filename = os.path.normpath(frames[-1].filename)
    parts = filename.split(os.sep)
    installed = [i for i, part in enumerate(parts[:-1]) if part.endswith("-packages")]
    if installed:
        return filename, os.path.splitext(parts[installed[-1] + 1])[0]
    if filename.startswith(sysconfig.get_paths()["stdlib"] + os.sep):
        return filename, os.path.splitext(parts[-1])[0]
    return filename, ""


def _while_training(err: BaseException) -> bool:
    trainer_file = os.path.join("transformers", "trainer.py")
    return any(f.name == "_inner_training_loop" and f.filename.endswith(trainer_file)
               for f in traceback.extract_tb(err.__traceback__))


def user_caused(err: BaseException) -> Optional[str]:
    """Whether err is about the user's input: "" or the library that refused it; None for a defect (a traceback).
    Decided by where it comes from, not by its type alone. ValueError and OSError (this project's checks; files,
    paths and the disk anywhere) and a perturbation that did not happen are the input's. Any other error raised
    inside a library before training starts was raised reading what the user gave it (the data, tokenizer, model,
    arguments), so it is named with that library. Any other error raised in this project's code, or inside a
    library once Trainer is training, is a defect: the input had passed every check."""
    from masksub_hf.perturb.audit import PerturbationNotApplied

    if isinstance(err, USER_ERRORS + (PerturbationNotApplied,)):
        return ""
    filename, library = _raised_by(err)
    if not library or library in ("masksub_hf", "tasks") or filename.startswith(OWN_CODE) or _while_training(err):
        return None
    return library


def disk_full(err: BaseException) -> bool:
    """Whether err, or what caused it, is a full disk (safetensors and torch.save raise their own types)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if getattr(err, "errno", None) == errno.ENOSPC or "No space left on device" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False


def _disk_full_exit(prog: str, err: BaseException):
    print(f"{prog}: error: the disk is full ({one_line(err)}); the checkpoint being written is incomplete and a rerun "
          "passes over it: free space (or choose --output_dir on another disk) and rerun the same command.",
          file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


class ArgumentParser(HfArgumentParser):
    """HfArgumentParser with one-line errors: a bad value or an unknown flag raises UsageError. Its --help shows
    the script's own flags first, then MaskSub's, then Trainer's (TrainingArguments), each under its heading."""

    def __init__(self, dataclass_types, **kwargs):
        kwargs.setdefault("usage", "%(prog)s [--flag value ...]  (this script's flags, then MaskSub's, then Trainer's)")
        kwargs.setdefault("allow_abbrev", False)  # a prefix (--learning) must not silently stand for a flag
        super().__init__(dataclass_types, **kwargs)
        # run_cli takes it out of argv before parsing; declared here so that --help lists it with the script's flags
        self.add_argument(TRACEBACK_FLAG, action="store_true", default=argparse.SUPPRESS,
                          help="Show the full traceback when the run ends in an error (or set MASKSUB_HF_TRACEBACK=1).")
        from dataclasses import fields

        from transformers import TrainingArguments

        trainer_fields = {f.name for f in fields(TrainingArguments)}
        groups = (("MaskSub: the sub-branch (masksub_hf.MaskSubConfig)", lambda a: a.dest.startswith("masksub_")),
                  ("Trainer: transformers.TrainingArguments", lambda a: a.dest in trainer_fields))
        for title, belongs in groups:
            moved = [a for a in self._actions if belongs(a) and a.option_strings]
            for group in self._action_groups:
                group._group_actions[:] = [a for a in group._group_actions if a not in moved]
            self.add_argument_group(title)._group_actions.extend(moved)

    def error(self, message):
        raise UsageError(f"{message} (see --help)")

    def parse_args_into_dataclasses(self, args=None, **kwargs):
        *parsed, remaining = super().parse_args_into_dataclasses(args=args, return_remaining_strings=True, **kwargs)
        if remaining:
            raise UsageError(self.unknown(remaining))
        return tuple(parsed)

    def unknown(self, remaining: List[str]) -> str:
        known = [o for action in self._actions for o in action.option_strings if o.startswith("--")]
        flags = [a.split("=")[0] for a in remaining if a.startswith("-")]
        if not flags:
            return f"unexpected argument(s) {' '.join(remaining)}; every value follows its --flag (see --help)."
        hints = []
        for flag in flags:
            close = [k for k in known if k.startswith(flag)][:1] or difflib.get_close_matches(flag, known, n=1, cutoff=0.75)
            hints.append(f"{flag} (did you mean {close[0]}?)" if close else flag)
        return f"unknown flag(s): {', '.join(hints)}; see --help."


def script_parser(dataclass_types, doc: str, prog: str, defaults: Dict, embedded: Dict, when: str) -> ArgumentParser:
    """An entry script's parser: --help opens with the script's description and the flags its embedded default run
    adds (`when`: "With no --train_data"), and shows the script's own defaults (not TrainingArguments')."""
    description = (f"{doc.split(chr(10) * 2)[0]} {when}: the embedded default, "
                   + ", ".join(f"--{k} {v}" for k, v in embedded.items()) + ".")
    parser = ArgumentParser(dataclass_types, prog=os.path.basename(prog), description=description)
    parser.set_defaults(**defaults)
    return parser


def parse_script_args(parser: ArgumentParser, argv: List[str], embedded: Callable[[Set[str]], Dict]):
    """argv over the parser's defaults and over `embedded(given)`, the flags of the embedded default run (or none)
    for the set of fields the command line gives, read as the parser reads it: every spelling counts
    (--train-data as --train_data). The user's flags come last, so they win."""
    unset = object()
    namespace = argparse.Namespace(**{a.dest: unset for a in parser._actions if a.dest != argparse.SUPPRESS})
    namespace, _ = parser.parse_known_args(argv, namespace=namespace)
    given = {dest for dest, value in vars(namespace).items() if value is not unset}
    return parser.parse_args_into_dataclasses(args=flag_argv(embedded(given)) + argv)


def flag_argv(values: Dict) -> List[str]:
    return [item for key, value in values.items() for item in (f"--{key}", str(value))]


# ---- checks before any data or model is loaded ---------------------------------------------------
def check_output_dir_writable(path: str, flag: str = "--output_dir") -> None:
    """Create the directory if needed and write a probe file in it: an unwritable place is found now,
    not when the first checkpoint is saved after data and model were loaded."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{flag} {path} is a file, not a directory; choose another {flag}.")
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise ValueError(f"{flag} {path} is not writable ({err.strerror or err}); choose another {flag}.") from None


def setup_logging(training_args) -> None:
    """The HF examples' logging: this project's INFO lines on stdout from the main process, datasets and
    transformers at the process's log level (--log_level; warning unless asked)."""
    import datasets
    import transformers

    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%H:%M:%S",
                        handlers=[logging.StreamHandler(sys.stdout)],
                        level=logging.INFO if training_args.should_log else logging.WARNING)
    level = training_args.get_process_log_level()
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)


def check_training_args(args) -> None:
    """Sizes and rates that no training can use, refused with the flag that sets them."""
    for flag in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        value = getattr(args, flag)
        if value < 1:
            raise ValueError(f"--{flag} must be at least 1; got {value}.")
    lr = args.learning_rate
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"--learning_rate must be a positive number; got {lr}.")
    if args.max_steps <= 0 and args.num_train_epochs <= 0:
        raise ValueError(f"nothing to train: --num_train_epochs {args.num_train_epochs} and --max_steps "
                         f"{args.max_steps}; give a positive --num_train_epochs or --max_steps.")
    if args.max_grad_norm is not None and args.max_grad_norm < 0:
        raise ValueError(f"--max_grad_norm must be 0 (no clipping) or positive; got {args.max_grad_norm}.")
    check_reporting(args.report_to)
    check_output_dir_writable(args.output_dir)


# the packages each --report_to integration imports (any one of them will do)
REPORTING_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "mlflow": ("mlflow",),
                      "comet_ml": ("comet_ml",), "clearml": ("clearml",), "neptune": ("neptune",),
                      "dvclive": ("dvclive",), "codecarbon": ("codecarbon",), "trackio": ("trackio",),
                      "swanlab": ("swanlab",), "azure_ml": ("azureml",), "dagshub": ("dagshub",),
                      "flyte": ("flytekit",)}


def check_reporting(report_to) -> None:
    """A --report_to integration whose package is missing, named before anything is loaded (Trainer would stop
    with a traceback from its constructor)."""
    import importlib.util

    for name in [report_to] if isinstance(report_to, str) else (report_to or []):
        packages = REPORTING_PACKAGES.get(name)
        if packages and not any(importlib.util.find_spec(p) for p in packages):
            raise ValueError(f"--report_to {name} needs the {packages[0]} package, which is not installed: "
                             f"pip install {packages[0]}, or pass --report_to none.")


def check_metric_for_best_model(args, logged) -> None:
    """--metric_for_best_model must name a metric the evaluation logs (Trainer would fail with a KeyError at the
    first evaluation, after training started)."""
    wanted = args.metric_for_best_model
    if not wanted:
        return
    name = wanted[len("eval_"):] if wanted.startswith("eval_") else wanted
    if name not in set(logged) | {"loss"}:
        raise ValueError(f"--metric_for_best_model {wanted}: the evaluation here logs {', '.join(sorted(set(logged)))} "
                         "and loss; name one of them.")


def check_positive(value, flag: str) -> None:
    if value is not None and value < 1:
        raise ValueError(f"--{flag} must be at least 1 (or left unset for all); got {value}.")


# ---- resuming ---------------------------------------------------------------------------------
LOCK_FILE = ".masksub_hf.lock"
_HELD = {}  # output_dir -> the open lock file of this process (released when the process ends)


def lock_output_dir(output_dir: str) -> None:
    """Take output_dir for this process; a second process training into it is refused with one line. Only the
    first process of a distributed run (RANK 0) takes it: the others write into it as that one run."""
    if os.environ.get("RANK", "0") != "0":
        return
    key = os.path.realpath(output_dir)
    if key in _HELD:
        return
    os.makedirs(output_dir, exist_ok=True)
    handle = open(os.path.join(output_dir, LOCK_FILE), "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        handle.close()
        raise ValueError(f"output directory {output_dir} is in use by a run still going ({owner}); wait for it to "
                         "finish, or choose another --output_dir.") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    _HELD[key] = handle


def resume_checkpoint(output_dir: str, resume_from_checkpoint: Optional[str], overwrite: bool,
                      do_train: bool = True) -> Optional[str]:
    """The checkpoint to resume from, by the Hugging Face scripts' rule: an explicit
    --resume_from_checkpoint (which must be complete); else, when training into an existing
    output_dir, its last COMPLETE checkpoint (newer half-written ones are skipped, with the reason);
    a non-empty output_dir without one is refused unless --overwrite_output_dir."""
    if resume_from_checkpoint:
        if not os.path.isdir(resume_from_checkpoint):
            raise ValueError(f"--resume_from_checkpoint {resume_from_checkpoint}: no such directory.")
        reason = incomplete_reason(resume_from_checkpoint)
        if reason is not None:
            raise ValueError(f"--resume_from_checkpoint {resume_from_checkpoint} cannot be resumed from: {reason}. "
                             "Give an earlier checkpoint, or leave the flag out to use the last complete one.")
        if do_train:
            lock_output_dir(output_dir)
        return resume_from_checkpoint
    if not do_train:
        return None
    if overwrite or not os.path.isdir(output_dir):
        lock_output_dir(output_dir)
        stale = [path for _, path in checkpoints(output_dir)]
        for path in stale:  # overwrite: no checkpoint of the earlier run may be resumed by a later rerun
            shutil.rmtree(path)
        if stale:
            logger.warning("--overwrite_output_dir: removed %d checkpoint(s) of an earlier run in %s (%s).", len(stale),
                           output_dir, ", ".join(os.path.basename(p) for p in stale))
        return None
    lock_output_dir(output_dir)
    last = last_complete_checkpoint(output_dir)
    if last is not None:
        logger.info("Resuming from checkpoint %s (pass --overwrite_output_dir to start over).", last)
        return last
    partial = {os.path.basename(path) for _, path in checkpoints(output_dir)}
    others = [name for name in os.listdir(output_dir) if name not in partial and name != LOCK_FILE]
    if others:
        raise ValueError(f"output directory {output_dir} already exists and is not empty (and holds no complete "
                         "checkpoint to resume from); pass --overwrite_output_dir to train into it anyway, or choose "
                         "another --output_dir.")
    return None
