"""Experiment B's dose pilot (``experiments/continual/dose_pilot.py``): disjoint prompts and the choice rule."""

from __future__ import annotations

import random

from real_assets import SHARED_REAL

from experiments.continual.dose_pilot import choose, pilot_prompts
from mentor.tasks.loaders import load_problems

IFEVAL = SHARED_REAL / "data" / "ifeval" / "input_data.jsonl"


def test_pilot_prompts_are_disjoint_from_experiment_b_test_prompts():
    test = {p.prompt for p in random.Random(0).sample(load_problems("ifeval", IFEVAL), 100)}
    pilot = pilot_prompts(IFEVAL)
    assert len(pilot) == 60 and len({p.prompt for p in pilot}) == 60
    assert not {p.prompt for p in pilot} & test


def _row(ifeval: float) -> dict:
    return {"ifeval_prompt_strict": {"value": ifeval}}


def test_choice_is_the_smallest_dose_five_points_below_the_base():
    assert choose({"base": _row(0.20), "d1": _row(0.18), "d2": _row(0.15), "d3": _row(0.05)}) == "d2"
    assert choose({"base": _row(0.20), "d1": _row(0.19), "d2": _row(0.17)}) is None
