"""``mentor bench coe`` on the paper's setting: the domains, the neutral corpus, the base recipe, the bench's smoke
run."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from experiments.coe.report import bootstrap_interval
from mentor.tasks.coe_tasks import (
    BASE_FUNCTIONS,
    BASE_OPERATORS,
    DOMAIN_NAMES,
    NEW_ATTRIBUTES,
    NEW_FUNCTIONS,
    NEW_OPERATORS,
    FactsTask,
    FunctionsTask,
    OperatorFunctionTask,
    OperatorsTask,
    last_field,
    neutral_corpus,
)

DOMAINS = (FactsTask(), OperatorsTask(), FunctionsTask())


def test_neutral_corpus_holds_none_of_the_domains_knowledge():
    words = set(re.findall(r"[a-z]+", "\n".join(neutral_corpus())))
    new = set(NEW_ATTRIBUTES) | set(NEW_OPERATORS) | set(NEW_FUNCTIONS) | set(DOMAIN_NAMES)
    assert not words & new
    assert set(BASE_OPERATORS) | set(BASE_FUNCTIONS) <= words  # the formats and the composition are there


@pytest.mark.parametrize("task", DOMAINS, ids=lambda t: t.name)
def test_domains_hold_out_a_share_and_test_only_trained_items(task):
    trained, heldout = task.trained(), task.heldout()
    assert len(heldout) >= 30 and not {p.prompt for p in trained} & {p.prompt for p in heldout}
    tests = task.test_problems(200)
    assert len(tests) == 200 and {p.prompt for p in tests} <= {p.prompt for p in trained}
    assert not {p.prompt for p in task.training_data()} & {p.prompt for p in heldout}
    assert all(task.grade(p.solution, p) == 1.0 for p in tests)


def test_collaboration_needs_a_new_operator_and_a_new_function_known_from_training():
    problems = OperatorFunctionTask().test_problems(200)
    assert len(problems) == 200
    trained = {p.prompt: p.answer for t in DOMAINS[1:] for p in t.trained()}
    for p in problems:
        fn, a, op, b = re.fullmatch(r"(\w+)\((\d) (\w+) (\d)\)=", p.prompt).groups()
        assert fn in NEW_FUNCTIONS and op in NEW_OPERATORS
        x = trained[f"{a} {op} {b}="]  # both steps are trained facts
        assert trained[f"{fn}({x})="] == p.answer == last_field(p.solution)
    training_prompts = {p.prompt for t in DOMAINS for p in t.training_data()}
    assert not training_prompts & {p.prompt for p in problems}


def test_intervals():
    assert bootstrap_interval([np.full(50, 0.4)]) == pytest.approx((0.4, 0.4))
    low, high = bootstrap_interval([np.r_[np.ones(100), np.zeros(100)]])
    assert 0.42 < low < 0.45 and 0.55 < high < 0.58  # +-1.96 * sqrt(.25 / 200) = +-6.9 points


def test_base_recipe_pretrains_a_loadable_base(tmp_path):
    from experiments.coe.base import BaseRecipe, pretrain_base
    from mentor.models.loading import load_model

    out = pretrain_base(
        tmp_path / "base", BaseRecipe(steps=3, batch_size=8, warmup_steps=1), quiet=True, accuracy_items=4
    )
    record = json.loads((out / "pretraining.json").read_text())
    assert record["recipe"]["steps"] == 3 and record["corpus_lines"] == len(neutral_corpus())
    assert set(record["greedy_accuracy_on_corpus"]) == {"facts", "operators", "functions", "chains"}
    assert (out / "corpus.txt").read_text().splitlines() == neutral_corpus()
    assert load_model(str(out)).config.intermediate_size == BaseRecipe.intermediate


def test_shipped_base_was_made_by_the_recipe():
    from dataclasses import asdict

    from experiments.coe.base import ASSET, BaseRecipe

    record = json.loads((ASSET / "pretraining.json").read_text())
    assert record["recipe"] == asdict(BaseRecipe()) and record["corpus_lines"] == len(neutral_corpus())


def test_bench_coe_smoke(tmp_path):
    """The whole protocol at a tiny scale, one seed: every row, gate, comparison and routing probe is written."""
    from mentor.cli import main

    assert (
        main(
            [
                "bench",
                "coe",
                "--quick",
                "--out",
                str(tmp_path),
                "--seeds",
                "0",
                "--expert-steps",
                "2",
                "--eval-size",
                "8",
            ]
        )
        == 0
    )
    text = (tmp_path / "results.md").read_text()
    assert text.index("## Protocol") < text.index("## Results")
    for row in (
        "base",
        "mixed SFT",
        "expert facts",
        "expert operators",
        "expert functions",
        "CoE-3E2A",
        "CoE-3E2A, no routing loss",
        "MoE-3E2A from base-FFN copies",
        "MoE-2E2A from base-FFN copies",
    ):
        assert f"| {row} |" in text
    assert text.count("capability conflict") >= 3
    result = json.loads((tmp_path / "results.json").read_text())
    assert len(result["summary"]["gates"]) == 6
    probe = result["summary"]["routing"]
    assert all(v["value"] == 1.0 for v in probe["MoE-2E2A from base-FFN copies"].values())  # 2 experts, top-2
    assert all(0 <= v["value"] <= 1 for p in probe.values() for v in p.values())
    for name in ("accuracy.png", "routing.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_bench_coe_refuses_bad_seeds_in_one_line(capsys):
    from mentor.cli import main

    assert main(["bench", "coe", "--seeds", "0,x", "--out", "unused"]) == 2
    assert "--seeds '0,x': give whole numbers" in capsys.readouterr().err
