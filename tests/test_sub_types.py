"""One registry of sub-branch types (masksub_hf/sub_types.py): every place that lists the types derives them from it."""
import run_clip
import run_glue
import run_image
from masksub_hf import MaskSubConfig, sub_types
from masksub_hf.plan import plan
from masksub_hf.models.base import TYPES, Family
from tests.helpers import tiny_bert


def choices(parser, flag="--masksub_type"):
    return list(parser._option_string_actions[flag].choices)


def test_every_list_of_types_is_the_registry():
    assert sub_types.MASKSUB_TYPES == ("auto",) + tuple(sub_types.PERTURBATIONS) + ("none",)
    assert TYPES == tuple(sub_types.PERTURBATIONS)
    assert all(callable(getattr(Family, t)) for t in TYPES)  # each perturbation is the Family method of its name
    from transformers import HfArgumentParser

    assert choices(HfArgumentParser(MaskSubConfig)) == list(sub_types.MASKSUB_TYPES)
    assert choices(run_clip.build_parser()) == list(sub_types.MASKSUB_TYPES)
    assert set(sub_types.RUN_NAMES) == set(sub_types.MASKSUB_TYPES)  # --compare_baseline names every type's run
    from tasks import compare

    assert compare.RUN_NAMES is sub_types.RUN_NAMES  # the one comparison the three scripts share names the runs
    assert not any(hasattr(script, "RUN_NAMES") for script in (run_glue, run_clip, run_image))
    rows = [line.split()[0] for line in plan(tiny_bert()).splitlines()[3:]]
    assert rows == list(TYPES)  # the plan: auto's line, then one row per perturbation
    assert sub_types.listed() == "mask, drop or path"
    from masksub_hf.plan import readme_table

    header = readme_table().splitlines()[0].split("|")[2:-1]  # the README's model table: one column per type
    assert [cell.split("`")[1] for cell in header] == list(TYPES)
    assert all(f"`{t}`" in cell for t, cell in zip(TYPES, header))
    flag_help = HfArgumentParser(MaskSubConfig)._option_string_actions["--masksub_type"].help
    assert all(f"'{t}' {p.help}" in flag_help for t, p in sub_types.PERTURBATIONS.items())  # --help, per type
