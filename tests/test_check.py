"""``mentor check`` and distill's start-up check, on pairs built from Qwen3's real tokenizer and template with tiny
models from a Qwen3 config: a matching pair passes with exit 0; templates that end turns differently, thinking on
one side only, a head smaller than the tokenizer, different EOS ids, a short context and another vocabulary are
each named on their line. Greedy decoding only: no test depends on sampling or timing."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import pytest
from conftest import make_model_dir
from real_assets import SHARED_REAL

from mentor.check import FAIL, OK, SKIP, WARN, CheckOptions, model_findings, run_check, screen, tokenizer_findings
from mentor.cli import main
from mentor.config import DistillConfig
from mentor.errors import MentorError
from mentor.models.loading import load_model, load_tokenizer
from mentor.models.tiny import build_tiny_model, save_tiny, tiny_config

QWEN3 = SHARED_REAL / "tokenizers" / "qwen3"
# ChatML as Qwen2.5 writes it: no thinking mode; ENDOFTEXT_TEMPLATE also ends each turn with <|endoftext|>
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
ENDOFTEXT_TEMPLATE = CHATML.replace("<|im_end|>", "<|endoftext|>")


def _verdicts(findings) -> dict[str, tuple[str, str]]:
    return {f.check: (f.verdict, f.detail) for f in findings}


@pytest.fixture(scope="module")
def qwen3():
    if not QWEN3.exists():
        pytest.skip(f"real tokenizer not found at {QWEN3}")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(QWEN3))


def _tokenizer_with(tokenizer, template: str | None = None, eos: str | None = None):
    other = copy.deepcopy(tokenizer)
    if template is not None:
        other.chat_template = template
    if eos is not None:
        other.eos_token = eos
    return other


def _tiny(tokenizer, vocab_size: int | None = None, seed: int = 0, max_positions: int = 512, eos=None):
    config = tiny_config(
        "qwen3", vocab_size or len(tokenizer), 32, 2, 4, tokenizer=tokenizer, max_positions=max_positions
    )
    model = build_tiny_model(config, seed=seed)
    if eos is not None:
        model.generation_config.eos_token_id = eos
    return model


@pytest.fixture(scope="module")
def pairs(qwen3, tmp_path_factory):
    """Model directories on disk, as a user has them: the same weights under different tokenizers and heads."""
    root = tmp_path_factory.mktemp("check")
    model = _tiny(qwen3)
    dirs = {
        "base": save_tiny(model, qwen3, root / "base"),
        "endoftext": save_tiny(model, _tokenizer_with(qwen3, ENDOFTEXT_TEMPLATE), root / "endoftext"),
        "small_head": save_tiny(_tiny(qwen3, vocab_size=151_650), qwen3, root / "small_head"),
        "padded_head": save_tiny(_tiny(qwen3, vocab_size=151_936), qwen3, root / "padded_head"),
    }
    return {name: str(path) for name, path in dirs.items()} | {"root": root}


def _check(student: str, teacher: str, **options) -> dict[str, tuple[str, str]]:
    options = {"measure_prompts": 2, "measure_tokens": 4, "max_new_tokens": 64} | options
    return _verdicts(run_check(CheckOptions(student=student, teacher=teacher, **options)))


# --- tokenizers only -----------------------------------------------------------------------------------------


def test_the_same_tokenizer_passes_every_cheap_check(qwen3):
    found = _verdicts(tokenizer_findings(qwen3, copy.deepcopy(qwen3)))
    assert {verdict for verdict, _ in found.values()} == {OK}
    assert "151,669 tokens" in found["vocabulary"][1] and "both templates have one" in found["thinking mode"][1]


def test_a_template_that_ends_turns_differently_names_the_first_differing_token(qwen3):
    teacher = _tokenizer_with(qwen3, ENDOFTEXT_TEMPLATE)
    found = _verdicts(tokenizer_findings(qwen3, teacher))
    verdict, detail = found["chat template"]
    conversation = [
        {"role": "user", "content": "Hi! Who are you?"},
        {"role": "assistant", "content": "I am a helpful assistant."},
        {"role": "user", "content": "What is 2+3?"},
    ]
    s_ids = qwen3.apply_chat_template(conversation, add_generation_prompt=True)["input_ids"]
    t_ids = teacher.apply_chat_template(conversation, add_generation_prompt=True)["input_ids"]
    first = next(i for i, (a, b) in enumerate(zip(s_ids, t_ids)) if a != b)
    assert t_ids[first] == qwen3.convert_tokens_to_ids("<|endoftext|>")
    assert verdict == WARN and f"from token {first} " in detail
    assert "['<|im_end|>']" in detail and "['<|endoftext|>']" in detail
    # Qwen3's template has a thinking mode, plain ChatML has none
    assert found["thinking mode"][0] == WARN and "only the student's" in found["thinking mode"][1]
    assert found["vocabulary"][0] == OK and found["special tokens"][0] == OK


def test_thinking_on_one_side_only_is_a_warning(qwen3):
    found = _verdicts(tokenizer_findings(_tokenizer_with(qwen3, CHATML), qwen3))
    assert found["thinking mode"][0] == WARN and "only the teacher's template" in found["thinking mode"][1]


def test_a_template_on_one_side_only_is_a_warning(qwen3):
    found = _verdicts(tokenizer_findings(_tokenizer_with(qwen3, ""), qwen3))
    assert found["chat template"][0] == WARN and "only the teacher has one" in found["chat template"][1]
    found = _verdicts(tokenizer_findings(_tokenizer_with(qwen3, ""), _tokenizer_with(qwen3, "")))
    assert found["chat template"][0] == OK and "neither" in found["chat template"][1]


def test_another_vocabulary_and_special_token_ids_fail(qwen3):
    from mentor.models.tiny import build_char_tokenizer

    found = _verdicts(tokenizer_findings(build_char_tokenizer(), qwen3))
    assert found["vocabulary"][0] == FAIL and "tokenizers differ" in found["vocabulary"][1]
    assert found["special tokens"][0] == FAIL and "absent" in found["special tokens"][1]
    extra = copy.deepcopy(qwen3)
    extra.add_special_tokens({"additional_special_tokens": ["<|tool_result|>"]})
    found = _verdicts(tokenizer_findings(qwen3, extra))
    assert found["special tokens"][0] == FAIL
    assert f"'<|tool_result|>' is absent for the student, {len(qwen3)} for the teacher" in found["special tokens"][1]


# --- with models ---------------------------------------------------------------------------------------------


def test_different_eos_ids_fail_when_disjoint_and_warn_when_they_overlap(qwen3):
    im_end, endoftext = qwen3.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    student = _tiny(qwen3, eos=im_end)
    base_teacher = _tokenizer_with(qwen3, eos="<|endoftext|>")  # as a base model's tokenizer
    found = _verdicts(model_findings(qwen3, base_teacher, student, _tiny(qwen3, eos=endoftext)))
    verdict, detail = found["end of turn"]
    assert verdict == FAIL and f"<|im_end|> ({im_end})" in detail and f"<|endoftext|> ({endoftext})" in detail
    found = _verdicts(model_findings(qwen3, base_teacher, student, _tiny(qwen3, eos=[im_end, endoftext])))
    assert found["end of turn"][0] == WARN
    found = _verdicts(model_findings(qwen3, qwen3, student, _tiny(qwen3, eos=im_end)))
    assert found["end of turn"] == (OK, f"both stop at <|im_end|> ({im_end})")


def test_generation_configs_that_differ_are_named(qwen3):
    student, teacher = _tiny(qwen3), _tiny(qwen3)
    teacher.generation_config.temperature, teacher.generation_config.do_sample = 0.6, True
    verdict, detail = _verdicts(model_findings(qwen3, qwen3, student, teacher))["generation config"]
    assert verdict == WARN and "temperature None vs 0.6" in detail and "do_sample" in detail


def test_context_lengths_against_max_new_tokens_and_prompts(qwen3, tmp_path):
    student, teacher = _tiny(qwen3, max_positions=512), _tiny(qwen3, max_positions=128)
    found = _verdicts(model_findings(qwen3, qwen3, student, teacher, max_new_tokens=128))
    assert found["context length"][0] == FAIL and "teacher's context" in found["context length"][1]
    found = _verdicts(model_findings(qwen3, qwen3, student, teacher, prompt_lengths=[10, 100], max_new_tokens=64))
    assert found["context length"][0] == WARN and "1 of 2 prompts" in found["context length"][1]
    found = _verdicts(model_findings(qwen3, qwen3, student, teacher, prompt_lengths=[10, 60], max_new_tokens=64))
    assert found["context length"][0] == OK and "(60 tokens)" in found["context length"][1]


# --- the command -----------------------------------------------------------------------------------------------


def test_a_matching_pair_passes_with_exit_0(pairs, capsys):
    code = main(
        [
            "check",
            "--student",
            pairs["base"],
            "--teacher",
            pairs["base"],
            "--measure-prompts",
            "2",
            "--measure-tokens",
            "4",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    lines = [line for line in out.splitlines() if line.split()[0] in (OK, WARN, FAIL, SKIP)]
    assert len(lines) == 10 and all(line.startswith("ok") for line in lines), out
    assert "gap 0.00 nats" in out and "grades move 0.00" in out and "usable (0 FAIL, 0 warn)" in out
    assert len(out.splitlines()) <= 24  # one screen


def test_a_head_smaller_than_the_tokenizer_fails_with_exit_2(pairs, capsys):
    code = main(["check", "--student", pairs["base"], "--teacher", pairs["small_head"], "--measure-tokens", "4"])
    captured = capsys.readouterr()
    assert code == 2 and "blocking mismatch (head sizes)" in captured.err and "\n" not in captured.err.strip()
    head = next(line for line in captured.out.splitlines() if "head sizes" in line)
    assert head.startswith("FAIL") and "151,650 rows for 151,669 tokens" in head
    assert next(line for line in captured.out.splitlines() if line.split()[1] == "measured").startswith("skip")


def test_a_padded_head_is_fine(pairs):
    found = _check(pairs["base"], pairs["padded_head"], measure_prompts=0)
    assert found["head sizes"][0] == OK
    assert "teacher 151,936" in found["head sizes"][1] and "padded" in found["head sizes"][1]


def test_the_measured_lines_score_what_opd_scores(qwen3):
    """A spy teacher: the student's completions after the student's prompts, the teacher's own after its own
    prompts, then the teacher's own after the student's prompts (the format line)."""
    from mentor.check import encode_probes, measured_findings, probe_examples
    from mentor.score.local import LocalTeacher

    teacher_tokenizer = _tokenizer_with(qwen3, ENDOFTEXT_TEMPLATE)
    student, teacher = _tiny(qwen3, seed=0), _tiny(qwen3, seed=1)
    examples = probe_examples(None, 2)
    calls = []

    class Spy(LocalTeacher):
        def compute_logprobs(self, sequences, score_from=None):
            calls.append((sequences, score_from))
            return super().compute_logprobs(sequences, score_from)

    found = _verdicts(
        measured_findings(
            Spy(teacher, qwen3.pad_token_id),
            student,
            qwen3,
            teacher_tokenizer,
            examples,
            3,
            teacher=teacher,
            teacher_stops=[qwen3.eos_token_id],
        )
    )
    s_prompts, t_prompts = encode_probes(qwen3, examples, None), encode_probes(teacher_tokenizer, examples, None)
    assert s_prompts != t_prompts and len(calls) == 3
    (on_student, s_from), (own, t_from), (moved, m_from) = calls
    assert s_from == m_from == [len(p) for p in s_prompts] and t_from == [len(p) for p in t_prompts]
    assert [seq[:n] for seq, n in zip(on_student, s_from)] == s_prompts
    assert [seq[n:] for seq, n in zip(own, t_from)] == [seq[n:] for seq, n in zip(moved, m_from)]
    assert [seq[:n] for seq, n in zip(moved, m_from)] == s_prompts
    assert {"measured", "measured format"} <= set(found)


def test_a_matching_pair_measures_no_gap(pairs):
    same = _check(pairs["base"], pairs["base"], measure_tokens=6)
    assert "grades move 0.00" in same["measured format"][1] and "gap 0.00" in same["measured"][1]


def test_another_vocabulary_stops_before_any_weights_load(pairs, tmp_path, monkeypatch):
    import mentor.models.loading as loading

    char_model = make_model_dir(tmp_path / "char")
    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("weights were loaded"))
    found = _check(char_model, pairs["base"])
    assert found["vocabulary"][0] == FAIL
    assert found["measured"][0] == SKIP and "no weights were loaded" in found["measured"][1]


def test_prompts_are_measured_against_the_contexts(pairs, tmp_path):
    path = tmp_path / "prompts.jsonl"
    rows = [{"prompt": "What is 2+3?"}, {"messages": [{"role": "user", "content": "word " * 480}]}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    found = _check(pairs["base"], pairs["base"], prompts=str(path), max_new_tokens=64, chat_template=False)
    verdict, detail = found["context length"]
    assert verdict == WARN and "1 of 2 prompts plus --max-new-tokens 64 exceed" in detail


def test_a_served_teacher_is_checked_as_far_as_a_server_allows(pairs):
    from mentor.serve import TeacherServer

    model, tokenizer = load_model(pairs["base"]), load_tokenizer(pairs["base"])
    with TeacherServer(model, tokenizer, model_name="tiny", port=0) as running:
        findings = run_check(
            CheckOptions(
                student=pairs["base"], teacher=running.url, measure_prompts=2, measure_tokens=3, max_new_tokens=64
            )
        )
    found = _verdicts(findings)
    assert found["vocabulary"][0] == OK and found["chat template"][0] == OK
    assert found["generation config"][0] == SKIP and found["served teacher"][0] == SKIP
    assert found["context length"][0] == OK and "teacher 512" in found["context length"][1]
    assert found["measured"][0] == OK and "grades move 0.00" in found["measured format"][1]
    assert screen(findings).endswith("usable (0 FAIL, 0 warn)")


# --- distill's start-up check ----------------------------------------------------------------------------------


def _distill_config(student: str, teacher: str, prompts: str, out: Path, **overrides) -> DistillConfig:
    return DistillConfig(
        student=student,
        teacher=teacher,
        prompts=prompts,
        output_dir=str(out),
        steps=1,
        batch_size=2,
        group_size=2,
        max_new_tokens=8,
        quiet=False,
        **overrides,
    )


def test_distill_stops_on_a_blocking_mismatch_with_one_line_before_training(tmp_path, prompts_file):
    from mentor.recipes.distill import run_distill

    student = make_model_dir(tmp_path / "student")
    teacher = make_model_dir(tmp_path / "teacher", seed=1)
    teacher_tokenizer = load_tokenizer(teacher)
    teacher_tokenizer.eos_token = "="  # the teacher ends its turns with a token that does not stop the student
    teacher_tokenizer.save_pretrained(teacher)
    config_path = Path(teacher) / "generation_config.json"
    generation = json.loads(config_path.read_text())
    generation["eos_token_id"] = teacher_tokenizer.eos_token_id
    config_path.write_text(json.dumps(generation))
    out = tmp_path / "run"
    with pytest.raises(MentorError, match=r"^mentor check: end of turn: student stops at <eos> \(2\)") as failure:
        run_distill(_distill_config(student, teacher, prompts_file, out))
    assert "\n" not in str(failure.value) and not (out / "metrics.jsonl").exists()
    # --no-check: the user knows better; the run goes ahead
    _, history = run_distill(_distill_config(student, teacher, prompts_file, tmp_path / "unchecked", check=False))
    assert len(history) == 1


def test_distill_logs_the_check_first(tmp_path, prompts_file, caplog):
    from mentor.recipes.distill import run_distill

    caplog.set_level(logging.INFO, logger="mentor")  # the check's lines are the library's notes (stderr in the CLI)
    student = make_model_dir(tmp_path / "student")
    _, history = run_distill(_distill_config(student, student, prompts_file, tmp_path / "run"))
    err = "\n".join(r.getMessage() for r in caplog.records if r.name == "mentor.check")
    assert len(history) == 1
    for check in (
        "vocabulary",
        "special tokens",
        "chat template",
        "head sizes",
        "end of turn",
        "context length",
        "measured",
    ):
        assert f"ok    {check}" in err, err
    assert "gap 0.00 nats" in err
