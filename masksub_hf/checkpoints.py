"""Which checkpoint a run can resume from: the newest COMPLETE one.

Trainer writes a checkpoint in a fixed order (model, optimizer, scheduler, RNG states) and
`trainer_state.json` last, so a process killed while saving leaves a directory without it (or
with a truncated one). Trainer's own `get_last_checkpoint` picks that directory by its number,
and resuming from it crashes. Here a checkpoint counts only when its trainer_state.json parses
and its model weights are there; the newer, incomplete ones are reported so the user knows why
they were passed over.

A save's last act is `manifest.json`: every file of the checkpoint with its size and sha256. A
checkpoint with a manifest is complete only when every file it lists is there, at that size and with
that hash, so a truncated `model.safetensors`, a deleted `optimizer.pt` or `rng_state.pth` is passed
over with its reason instead of crashing the resume or resuming with fresh state. (Checkpoints written
without one, by Trainer itself, get the older check.)
"""
import hashlib
import json
import logging
import os
import re
from typing import Dict, List, Optional, Tuple

from transformers import PreTrainedModel

logger = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"
MANIFEST = "manifest.json"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json", "adapter_model.safetensors", "adapter_model.bin")


def _files(checkpoint: str) -> List[str]:
    found = []
    for root, _, names in os.walk(checkpoint):
        found += [os.path.relpath(os.path.join(root, n), checkpoint) for n in names]
    return sorted(f for f in found if f != MANIFEST)


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(checkpoint: str, run: Optional[Dict] = None) -> None:
    """The last act of a save: name, size and sha256 of every file, and what run wrote it, written atomically."""
    files = {name: {"size": os.path.getsize(os.path.join(checkpoint, name)),
                    "sha256": file_sha256(os.path.join(checkpoint, name))} for name in _files(checkpoint)}
    path = os.path.join(checkpoint, MANIFEST)
    with open(path + ".tmp", "w") as f:
        json.dump({"run": run or {}, "files": files}, f, indent=1)
    os.replace(path + ".tmp", path)


IDENTITY_SIZES = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")


def model_identity(model) -> Dict:
    """What makes a checkpoint this model's: its class, architecture sizes and label set."""
    config = getattr(model, "config", None)
    found = {"model": type(model).__name__}
    if config is None:
        return found
    found["model_type"] = getattr(config, "model_type", None)
    for key in IDENTITY_SIZES + ("num_labels",):
        if isinstance(getattr(config, key, None), int):
            found[key] = getattr(config, key)
    id2label = getattr(config, "id2label", None)
    if id2label:
        found["labels"] = [str(id2label[i]) for i in sorted(id2label)]
    return found


def identity_mismatch(checkpoint: str, run: Dict) -> Optional[str]:
    """None when the checkpoint can belong to `run`, else the first difference, in words. The manifest says what
    run wrote it; a checkpoint without one (plain Trainer) is compared through its config.json."""
    try:
        with open(os.path.join(checkpoint, MANIFEST)) as f:
            saved = json.load(f).get("run", {})
    except (OSError, ValueError):
        saved = {}
    if not saved:
        try:
            with open(os.path.join(checkpoint, "config.json")) as f:
                config = json.load(f)
        except (OSError, ValueError):
            return None if "model_type" not in run else "it has no config.json to tell which model it holds"
        saved = {k: config[k] for k in ("model_type",) + IDENTITY_SIZES if k in config}
    for key, mine in run.items():
        if key in saved and saved[key] != mine:
            return f"its {key} is {saved[key]!r}, this run's is {mine!r}"
    return None


def manifest_mismatch(checkpoint: str) -> Optional[str]:
    """None when every file the manifest lists is there as it was written, else the first difference."""
    try:
        with open(os.path.join(checkpoint, MANIFEST)) as f:
            files = json.load(f)["files"]
    except (OSError, ValueError, KeyError):
        return f"its {MANIFEST} is unreadable"
    for name, want in files.items():
        path = os.path.join(checkpoint, name)
        if not os.path.isfile(path):
            return f"its {name} is missing"
        size = os.path.getsize(path)
        if size != want["size"]:
            return f"its {name} is truncated or changed ({size} bytes, {want['size']} were written)"
        if file_sha256(path) != want["sha256"]:
            return f"its {name} does not match what was written (sha256 differs)"
    return None


def incomplete_reason(checkpoint: str) -> Optional[str]:
    """None when `checkpoint` can be resumed from, else why not (in words)."""
    if os.path.isfile(os.path.join(checkpoint, MANIFEST)):
        return manifest_mismatch(checkpoint)
    state = os.path.join(checkpoint, TRAINER_STATE)
    if not os.path.isfile(state):
        return f"it has no {TRAINER_STATE} (the save was interrupted)"
    try:
        with open(state, encoding="utf-8") as f:
            json.load(f)
    except (OSError, ValueError):
        return f"its {TRAINER_STATE} is truncated or unreadable (the save was interrupted)"
    names = set(os.listdir(checkpoint))
    if not names & set(WEIGHT_FILES) and not any(n.startswith("pytorch_model_fsdp") or n.startswith("global_step")
                                                 for n in names):
        return "it holds no model weights"
    return None


def checkpoints(output_dir: str) -> List[Tuple[int, str]]:
    """(step, path) of every checkpoint-N directory in output_dir, oldest first."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        match = _CHECKPOINT.match(name)
        if match and os.path.isdir(os.path.join(output_dir, name)):
            found.append((int(match.group(1)), os.path.join(output_dir, name)))
    return sorted(found)


def last_complete_checkpoint(output_dir: str, log: bool = True) -> Optional[str]:
    """The newest checkpoint that can be resumed from, or None. With `log`, each newer checkpoint
    that is skipped is reported with the reason, and so is the one chosen."""
    skipped = []
    for _, path in reversed(checkpoints(output_dir)):
        reason = incomplete_reason(path)
        if reason is None:
            if log:
                for bad, why in skipped:
                    logger.warning("Skipping %s: %s.", bad, why)
                if skipped:
                    logger.warning("Resuming from %s, the last complete checkpoint.", path)
            return path
        skipped.append((path, reason))
    if log:
        for bad, why in skipped:
            logger.warning("Skipping %s: %s; no complete checkpoint is left, so training starts afresh.", bad, why)
    return None


class ResumeFromCompleteCheckpoint:
    """Trainer mixin: `train(resume_from_checkpoint=True)` resumes from the last complete checkpoint,
    not from a half-written or damaged newer one; an explicit incomplete path is refused with the reason,
    and so is a checkpoint of another run (another model, label set or sub-branch setting).
    Each checkpoint it saves ends with its manifest, and weights load through from_pretrained, strictly."""

    def run_identity(self) -> Dict:
        """What a checkpoint of this run must match to be resumed (the manifest records it)."""
        return model_identity(self.accelerator.unwrap_model(self.model))

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        folder = os.path.join(self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}")
        if self.args.should_save and os.path.isdir(folder):
            write_manifest(folder, self.run_identity())

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        if resume_from_checkpoint is True:
            found = last_complete_checkpoint(self.args.output_dir)
            if found is None:
                incomplete = " (only incomplete ones, passed over above)" if checkpoints(self.args.output_dir) else ""
                raise ValueError(f"No valid checkpoint found in output directory ({self.args.output_dir}){incomplete}")
            resume_from_checkpoint = found
        elif isinstance(resume_from_checkpoint, str) and os.path.isdir(resume_from_checkpoint):
            reason = incomplete_reason(resume_from_checkpoint)
            if reason is not None:
                raise ValueError(f"cannot resume from {resume_from_checkpoint}: {reason}; resume from an earlier "
                                 "checkpoint, or start afresh.")
        if isinstance(resume_from_checkpoint, str) and os.path.isdir(resume_from_checkpoint):
            other = identity_mismatch(resume_from_checkpoint, self.run_identity())
            if other is not None:
                raise ValueError(f"cannot resume from {resume_from_checkpoint}: it is a checkpoint of another run "
                                 f"({other}); start afresh with --overwrite_output_dir or another --output_dir, or "
                                 "run with the settings it was written with.")
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _load_pretrained_weights(self, checkpoint, model=None) -> bool:
        """Load a checkpoint's weights through from_pretrained, strictly.

        Trainer (5.x) reads checkpoint tensors under the model's internal names, so a model whose
        saved names are converted (ViT: encoder.layer -> layers) silently resumes from random
        weights. from_pretrained applies the conversion. Returns False where Trainer must load.
        """
        model = model if model is not None else self.model
        if (not isinstance(model, PreTrainedModel) or self.is_deepspeed_enabled or self.is_fsdp_enabled
                or not os.path.isfile(os.path.join(checkpoint, "config.json"))):
            return False
        loaded, info = type(model).from_pretrained(checkpoint, config=model.config, output_loading_info=True)
        missing = list(info.get("missing_keys") or []) + [k[0] if isinstance(k, tuple) else k
                                                          for k in info.get("mismatched_keys") or []]
        if missing:  # from_pretrained would initialise them afresh: a checkpoint of another model
            raise ValueError(f"cannot load {checkpoint}: {len(missing)} weights of this {type(model).__name__} are "
                             f"missing from it or shaped differently (first: {sorted(missing)[0]}); it holds another "
                             "model. Start afresh, or resume from a checkpoint of this model.")
        model.load_state_dict(loaded.state_dict(), strict=True)
        return True

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        if not self._load_pretrained_weights(resume_from_checkpoint, model):
            super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_best_model(self):
        if not self._load_pretrained_weights(self.state.best_model_checkpoint):
            super()._load_best_model()
