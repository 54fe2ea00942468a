"""Say what MaskSub will do to a model before training it.

    python -m masksub_hf.plan MODEL_DIR_OR_ID [--masksub_type mask] [--masksub_ratio 0.5]
    python -m masksub_hf.plan --readme-table      # the README's supported-models table
    python -m masksub_hf.plan --auto-table        # the README's table of what --masksub_type auto picks

The model is built from its config alone (random weights: the plan depends on the architecture,
not on the weights), so a local directory needs only its config.json (a PEFT adapter directory
is read through its base model's config). The same plan is `masksub_hf.plan.plan(model)`.
"""
import argparse
import json
import os
import sys
from typing import Iterable, Optional

from torch import nn

from .config import MASKSUB_TYPES
from .sub_types import listed
from .models import FAMILIES, base_model_of, find_family
from .models.base import GENERIC, TYPES
from .recommend import choose, explain, readme_table as auto_table


def plan(model: nn.Module, masksub_types: Optional[Iterable[str]] = None, ratio: float = 0.5) -> str:
    """The family found, what `auto` picks for it and why, and, per masksub_type, what it does to this model,
    its expected cost, or why it is refused (the error MaskSubTrainer would raise at construction)."""
    base = base_model_of(model)
    family = find_family(base)
    wrapped = f" (inside {type(model).__name__})" if base is not model else ""
    lines = [f"model: {type(base).__name__}{wrapped}", f"family: {family.name}"]
    try:
        lines.append(explain(*choose(family, base)))
    except ValueError as err:
        lines.append(str(err))
    for t in [t for t in (masksub_types or TYPES) if t != "auto"]:
        reason = family.refusal(base, t)
        if reason is not None:
            lines.append(f"  {t:5} refused: {reason}")
            continue
        sub = family.sub_cost(base, t, ratio)
        lines.append(f"  {t:5} {family.describe(base, t, ratio)}; sub-branch about {sub:.2f}x the main branch's "
                     f"compute, so a step about {1 + sub:.2f}x Trainer's")
    return "\n".join(lines)


def load_for_plan(name_or_path: str) -> nn.Module:
    """A randomly initialised model of the architecture that `name_or_path` describes."""
    import transformers

    adapter = os.path.join(name_or_path, "adapter_config.json")
    if os.path.isfile(adapter):
        with open(adapter) as f:
            peft_config = json.load(f)
        return load_for_plan(peft_config["base_model_name_or_path"])
    config = transformers.AutoConfig.from_pretrained(name_or_path)
    architectures = getattr(config, "architectures", None) or []
    for arch in architectures:
        cls = getattr(transformers, arch, None)
        if cls is not None:
            return cls(config) if not hasattr(cls, "_from_config") else cls._from_config(config)
    raise ValueError(f"{name_or_path}: its config names no architecture transformers knows "
                     f"(architectures: {architectures or 'none'}); pass a model directory saved with save_pretrained.")


def readme_table() -> str:
    """The supported-models table of the README, from the registry (what the code knows is what it says)."""
    head = [f"`{t}`" for t in TYPES]
    rows = [f"| family | {head[0]} does | {' | '.join(head[1:])} |", "|---" * (len(TYPES) + 1) + "|"]
    for family in FAMILIES + [GENERIC]:
        rows.append(f"| {family.name} | {' | '.join(getattr(family, f'{t}_doc') for t in TYPES)} |")
    return "\n".join(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m masksub_hf.plan", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", help="a local model directory (config.json) or a hub id")
    parser.add_argument("--masksub_type", "--masksub-type", choices=[t for t in MASKSUB_TYPES if t != "none"],
                        help=f"only this type (default: {listed(last='and')}; auto's pick is always shown)")
    parser.add_argument("--masksub_ratio", "--masksub-ratio", type=float, default=0.5,
                        help="the ratio the plan assumes, in [0, 1) (default 0.5)")
    parser.add_argument("--readme-table", action="store_true", help="print the README's supported-models table")
    parser.add_argument("--auto-table", action="store_true", help="print the README's table of what auto picks")
    a = parser.parse_args(argv)
    if a.readme_table or a.auto_table:
        print(readme_table() if a.readme_table else auto_table())
        return 0
    if not a.model:
        parser.error("name a model directory or hub id, or pass --readme-table")
    if not 0 <= a.masksub_ratio < 1:
        parser.error(f"--masksub_ratio must be in [0, 1) (the share dropped, or the probability); got {a.masksub_ratio}")
    if not os.path.exists(a.model) and (os.path.isabs(a.model) or a.model.startswith((".", "~"))
                                        or os.path.exists(os.path.dirname(a.model) or "-")):
        print(f"{parser.prog}: error: {a.model}: no such directory (a local model directory holds its config.json)",
              file=sys.stderr)
        return 2
    try:
        model = load_for_plan(a.model)
    except (OSError, ValueError) as err:  # one line: transformers' hub errors span several
        where = "" if os.path.exists(a.model) else "no such local directory, and as a hub id: "
        print(f"{parser.prog}: error: cannot read a model config from {a.model!r}: {where}{' '.join(str(err).split())}",
              file=sys.stderr)
        return 2
    print(plan(model, [a.masksub_type] if a.masksub_type else None, a.masksub_ratio))
    return 0


if __name__ == "__main__":
    sys.exit(main())
