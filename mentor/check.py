"""``mentor check``: will this teacher and student work together? One line per check, before any compute is spent.

Token-level distillation compares the teacher's and the student's log-probs of the same token ids, after a
prompt the student's tokenizer wrote. Mismatches that do not crash still ruin a run: turns that end with
different tokens (completions run to the length limit), chat templates that render a conversation differently
(the teacher grades text in a format it never saw), a thinking-mode template on one side only. The checks:

- cheap, tokenizers only (before any weights load): vocabulary, special-token ids, chat templates (the same
  conversation rendered by both), thinking mode;
- with the models: head sizes against the tokenizer, end-of-turn ids, generation configs, context lengths
  against the prompts plus ``--max-new-tokens``;
- measured: the teacher's mean log-prob per token on the student's greedy completions of a few prompts, beside
  its mean log-prob on its own greedy completions (a template mismatch shows as a gap of nats).

A ``FAIL`` is a mismatch a run cannot survive (``mentor check`` exits 2, ``mentor distill`` stops with one line);
a ``warn`` is printed and the run goes on. ``mentor distill`` runs the same checks first (``--no-check`` skips).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from statistics import fmean

from mentor.errors import MentorError
from mentor.models.chat import chat_ids, has_chat_template, stop_token_ids

logger = logging.getLogger(__name__)
OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skip"
# the measured check warns when the teacher likes the student's completions this much less than its own
# (nats per token): a weak student costs some, a template the teacher never saw costs more
GAP_WARN = 1.5
# ... and when its own completions lose this much after the student's rendering of the prompts (0 when equal)
FORMAT_WARN = 0.5
CONVERSATION = [
    {"role": "user", "content": "Hi! Who are you?"},
    {"role": "assistant", "content": "I am a helpful assistant."},
    {"role": "user", "content": "What is 2+3?"},
]
PROBES = [
    "What is the capital of France?",
    "Write one short sentence about the sea.",
    "What is 12 times 7?",
    "Name three colors.",
]
GENERATION_FIELDS = ("do_sample", "temperature", "top_p", "top_k", "min_p", "repetition_penalty", "bos_token_id")


@dataclass
class Finding:
    verdict: str  # ok, warn, FAIL or skip
    check: str
    detail: str

    def line(self) -> str:
        return f"{self.verdict:<4}  {self.check:<18} {self.detail}"


def blocking(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.verdict == FAIL]


def screen(findings: list[Finding], title: str = "") -> str:
    lines = [title] if title else []
    lines += [f.line() for f in findings]
    failed, warned = len(blocking(findings)), sum(f.verdict == WARN for f in findings)
    lines.append(f"verdict: {'blocking mismatch' if failed else 'usable'} ({failed} FAIL, {warned} warn)")
    return "\n".join(lines)


# --- tokenizers only ----------------------------------------------------------------------------------------


def tokenizer_findings(student_tokenizer, teacher_tokenizer) -> list[Finding]:
    """The cheap checks: no weights needed."""
    return [
        _vocabulary(student_tokenizer, teacher_tokenizer),
        _special_tokens(student_tokenizer, teacher_tokenizer),
        _chat_templates(student_tokenizer, teacher_tokenizer),
        _thinking(student_tokenizer, teacher_tokenizer),
    ]


def _vocabulary(student, teacher) -> Finding:
    from mentor.models.loading import check_same_vocabulary

    try:
        check_same_vocabulary(student, teacher)
    except MentorError as exc:
        return Finding(FAIL, "vocabulary", str(exc))
    return Finding(OK, "vocabulary", f"{len(student):,} tokens, the same ids on both sides")


def _specials(tokenizer) -> set[str]:
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    return set(tokenizer.all_special_tokens) | {str(token) for token in added.values() if getattr(token, "special", 0)}


def _special_tokens(student, teacher) -> Finding:
    s_vocab, t_vocab = student.get_vocab(), teacher.get_vocab()
    names = sorted(_specials(student) | _specials(teacher))
    differ = [name for name in names if s_vocab.get(name) != t_vocab.get(name)]
    if differ:
        name = differ[0]
        return Finding(
            FAIL,
            "special tokens",
            f"{len(differ)} of {len(names)} differ: {name!r} is "
            f"{_id_or_absent(s_vocab.get(name))} for the student, {_id_or_absent(t_vocab.get(name))} "
            "for the teacher",
        )
    roles = [
        role for role in ("bos_token", "unk_token") if getattr(student, role, None) != getattr(teacher, role, None)
    ]
    if roles:
        shown = ", ".join(
            f"{role[:3]} {getattr(student, role, None)!r} vs {getattr(teacher, role, None)!r}" for role in roles
        )
        return Finding(
            WARN,
            "special tokens",
            f"{len(names)} with the same ids, but the roles differ: {shown} "
            "(student vs teacher; the teacher scores prompts tokenised by the student)",
        )
    return Finding(OK, "special tokens", f"{len(names)}, the same ids on both sides")


def _id_or_absent(value) -> str:
    return "absent" if value is None else str(value)


def _render(tokenizer) -> list[int]:
    return chat_ids(tokenizer, CONVERSATION, add_generation_prompt=True)


def _chat_templates(student, teacher) -> Finding:
    has = {"student": has_chat_template(student), "teacher": has_chat_template(teacher)}
    if not any(has.values()):
        return Finding(OK, "chat template", "neither tokenizer has one: prompts are plain text on both sides")
    if not all(has.values()):
        side = "student" if has["student"] else "teacher"
        return Finding(
            WARN,
            "chat template",
            f"only the {side} has one: `messages` prompts are rendered by the "
            "student's tokenizer, in a format the teacher was not tuned on"
            if side == "teacher"
            else f"only the {side} has one: the teacher grades chat-formatted prompts it was not tuned on",
        )
    rendered = {}
    for side, tokenizer in (("student", student), ("teacher", teacher)):
        try:
            rendered[side] = _render(tokenizer)
        except Exception as exc:  # jinja raises its own errors (e.g. a template that refuses a role order)
            return Finding(
                WARN,
                "chat template",
                f"the {side}'s template cannot render a user/assistant/user "
                f"conversation ({' '.join(str(exc).split())[:80]})",
            )
    s_ids, t_ids = rendered["student"], rendered["teacher"]
    if s_ids == t_ids:
        same_text = (student.chat_template or "") == (teacher.chat_template or "")
        return Finding(
            OK,
            "chat template",
            f"a 3-turn conversation renders to the same {len(s_ids)} ids"
            + ("" if same_text else " (the template texts differ)"),
        )
    first = next((i for i, (a, b) in enumerate(zip(s_ids, t_ids)) if a != b), min(len(s_ids), len(t_ids)))
    return Finding(
        WARN,
        "chat template",
        f"a 3-turn conversation renders differently from token {first} "
        f"(student {len(s_ids)} ids, teacher {len(t_ids)}): student {_around(student, s_ids, first)}"
        f" | teacher {_around(teacher, t_ids, first)}",
    )


def _around(tokenizer, ids: list[int], position: int, before: int = 2, after: int = 2) -> str:
    """The decoded tokens around ``position``, the one at ``position`` in brackets: ``'a' 'b' ['c'] 'd'``."""
    shown = []
    for i in range(max(0, position - before), min(len(ids), position + after + 1)):
        text = repr(tokenizer.decode([ids[i]]))
        text = text if len(text) <= 18 else text[:15] + "...'"
        shown.append(f"[{text}]" if i == position else text)
    if position >= len(ids):
        shown.append("[end]")
    return " ".join(shown)


def _thinks(tokenizer) -> bool:
    template = getattr(tokenizer, "chat_template", None) or ""
    return isinstance(template, str) and ("<think>" in template or "enable_thinking" in template)


def _thinking(student, teacher) -> Finding:
    s, t = _thinks(student), _thinks(teacher)
    if s == t:
        return Finding(OK, "thinking mode", "both templates have one" if s else "neither template has one")
    side, other = ("teacher", "student") if t else ("student", "teacher")
    return Finding(
        WARN,
        "thinking mode",
        f"only the {side}'s template has one (<think>): the {side} expects "
        f"think blocks the {other} does not write, so their turns start differently",
    )


# --- with the models ----------------------------------------------------------------------------------------


def model_findings(
    student_tokenizer,
    teacher_tokenizer,
    student,
    teacher=None,
    teacher_context: int | None = None,
    prompt_lengths: list[int] | None = None,
    max_new_tokens: int = 256,
) -> list[Finding]:
    """Head sizes, end-of-turn ids, generation configs and context lengths. ``teacher`` is None for a server:
    its side of the head and generation-config checks is skipped, its context is ``teacher_context`` if known."""
    from mentor.models.loading import context_length

    contexts = {
        "student": context_length(student),
        "teacher": context_length(teacher) if teacher is not None else teacher_context,
    }
    return [
        _heads(student_tokenizer, teacher_tokenizer, student, teacher),
        _stop_ids(student_tokenizer, teacher_tokenizer, student, teacher),
        _generation_configs(student, teacher),
        _contexts(contexts, prompt_lengths, max_new_tokens),
    ]


def _head_rows(model) -> int | None:
    from mentor.models.logprobs import causal_lm_of

    head = causal_lm_of(model).get_output_embeddings()
    return None if head is None else int(head.weight.shape[0])


def _heads(student_tokenizer, teacher_tokenizer, student, teacher) -> Finding:
    rows = {"student": (_head_rows(student), len(student_tokenizer))}
    if teacher is not None:
        rows["teacher"] = (_head_rows(teacher), len(teacher_tokenizer))
    for side, (head, tokens) in rows.items():
        if head is not None and head < tokens:
            return Finding(
                FAIL,
                "head sizes",
                f"the {side}'s output layer has {head:,} rows for {tokens:,} tokens: "
                f"ids from {head:,} up have no log-prob (the checkpoint and tokenizer do not belong "
                "together)",
            )
    shown = ", ".join(f"{side} {head:,}" for side, (head, _) in rows.items() if head is not None)
    padded = any(head is not None and head > tokens for head, tokens in rows.values())
    note = "" if teacher is not None else " (a server's head is not visible)"
    return Finding(
        OK,
        "head sizes",
        f"{shown} rows >= {len(student_tokenizer):,} tokens"
        + (" (padded: the extra rows are never sampled)" if padded else "")
        + note,
    )


def _token_names(tokenizer, ids: list[int]) -> str:
    return ", ".join(f"{tokenizer.convert_ids_to_tokens(i)} ({i})" for i in ids)


def _stop_ids(student_tokenizer, teacher_tokenizer, student, teacher) -> Finding:
    try:
        s_stops = stop_token_ids(student_tokenizer, student)
        t_stops = stop_token_ids(teacher_tokenizer, teacher)
    except MentorError as exc:
        return Finding(FAIL, "end of turn", str(exc))
    source = (
        ""
        if teacher is not None
        else " (the teacher's from its tokenizer: a server's generation config is not visible)"
    )
    if set(s_stops) == set(t_stops):
        return Finding(OK, "end of turn", f"both stop at {_token_names(student_tokenizer, s_stops)}{source}")
    shown = (
        f"student stops at {_token_names(student_tokenizer, s_stops)}, teacher at "
        f"{_token_names(teacher_tokenizer, t_stops)}"
    )
    if not set(s_stops) & set(t_stops):
        return Finding(
            FAIL,
            "end of turn",
            f"{shown}: the teacher never ends a turn where the student does, so "
            f"OPD teaches the student to end turns with a token that does not stop it{source}",
        )
    return Finding(WARN, "end of turn", f"{shown}{source}")


def _generation_configs(student, teacher) -> Finding:
    from mentor.models.logprobs import causal_lm_of

    if teacher is None:
        return Finding(SKIP, "generation config", "a server's generation config is not visible")
    s_config = getattr(causal_lm_of(student), "generation_config", None)
    t_config = getattr(causal_lm_of(teacher), "generation_config", None)
    differ = [(name, getattr(s_config, name, None), getattr(t_config, name, None)) for name in GENERATION_FIELDS]
    differ = [(name, s, t) for name, s, t in differ if s != t]
    if not differ:
        return Finding(
            OK, "generation config", "the same sampling settings (mentor samples at --temperature, without them)"
        )
    shown = ", ".join(f"{name} {s} vs {t}" for name, s, t in differ[:4])
    return Finding(
        WARN,
        "generation config",
        f"they differ: {shown} (student vs teacher; mentor samples at "
        "--temperature without them, but the teacher was tuned to be run with its own)",
    )


def _contexts(contexts: dict[str, int | None], prompt_lengths: list[int] | None, max_new_tokens: int) -> Finding:
    known = {side: n for side, n in contexts.items() if n}
    if not known:
        return Finding(SKIP, "context length", "neither model states a context length")
    side = min(known, key=known.get)
    limit = known[side]
    shown = ", ".join(f"{s} {n:,}" for s, n in known.items())
    if max_new_tokens >= limit:
        return Finding(
            FAIL,
            "context length",
            f"{shown} positions: --max-new-tokens {max_new_tokens} leaves no room for a prompt in the {side}'s context",
        )
    if not prompt_lengths:
        return Finding(
            OK,
            "context length",
            f"{shown} positions; --max-new-tokens {max_new_tokens} leaves "
            f"{limit - max_new_tokens:,} for a prompt (prompt lengths not measured)",
        )
    over = [n for n in prompt_lengths if n + max_new_tokens > limit]
    if over:
        return Finding(
            WARN,
            "context length",
            f"{len(over)} of {len(prompt_lengths)} prompts plus --max-new-tokens "
            f"{max_new_tokens} exceed the {side}'s {limit:,} positions (longest prompt "
            f"{max(prompt_lengths):,} tokens): distill skips them",
        )
    return Finding(
        OK,
        "context length",
        f"{shown} positions; the longest of {len(prompt_lengths)} prompts "
        f"({max(prompt_lengths):,} tokens) + --max-new-tokens {max_new_tokens} fits",
    )


# --- measured ------------------------------------------------------------------------------------------------


def probe_examples(records=None, count: int = 4):
    """The prompts of the measured check: the first ``count`` records given, else a few built-in questions."""
    from mentor.data.prompts import Example

    return list(records[:count]) if records else [Example(prompt=text) for text in PROBES[:count]]


def encode_probes(tokenizer, examples, chat_template: bool | None) -> list[list[int]]:
    """Each side's own rendering of the same records: ``chat_template`` None uses a template where there is one."""
    from mentor.data.prompts import encode_prompt

    use = has_chat_template(tokenizer) if chat_template is None else chat_template
    return [encode_prompt(tokenizer, example, use) for example in examples]


def _mean_completion_logprob(scorer, prompts: list[list[int]], completions: list[list[int]]) -> tuple[float, int]:
    sequences = [p + c for p, c in zip(prompts, completions) if c]
    starts = [len(p) for p, c in zip(prompts, completions) if c]
    if not sequences:
        return float("nan"), 0
    scored = scorer.compute_logprobs(sequences, score_from=starts)
    values = [float(v) for logprobs, start in zip(scored, starts) for v in logprobs[start:]]
    return fmean(values), len(values)


def greedy(model, tokenizer, prompts: list[list[int]], max_new_tokens: int) -> tuple[list[list[int]], int]:
    """Greedy completions and how many ran to ``max_new_tokens`` without an end-of-turn token."""
    from mentor.sample.hf import HFSampler

    sampled = HFSampler(model, tokenizer, max_new_tokens, batch_size=len(prompts)).sample(prompts, greedy=True)
    return sampled.completion_ids, sum(sampled.truncated)


def greedy_by_top1(scorer, prompts: list[list[int]], stop_ids: list[int], max_new_tokens: int):
    """Greedy completions from a teacher that only scores (a server): one top-1 request per new token.

    The prediction after a sequence is read at an appended placeholder token (a position's top-k is about the
    token at that position, given the ones before it)."""
    completions = [[] for _ in prompts]
    active = list(range(len(prompts)))
    for _ in range(max_new_tokens):
        if not active:
            break
        answers = scorer.compute_top_k([prompts[i] + completions[i] + [stop_ids[0]] for i in active], 1)
        still = []
        for i, answer in zip(active, answers):
            token = int(answer.ids[-1, 0])
            completions[i].append(token)
            if token not in stop_ids:
                still.append(i)
        active = still
    return completions, len(active)


def measured_findings(
    scorer,
    student,
    student_tokenizer,
    teacher_tokenizer,
    examples,
    max_new_tokens: int,
    chat_template: bool | None = None,
    teacher=None,
    teacher_stops: list[int] | None = None,
) -> list[Finding]:
    """Two lines of measured numbers (mean teacher log-prob per completion token, greedy completions):

    - ``measured``: on the student's completions after the student's prompts (as OPD scores them) beside on the
      teacher's own completions after its own rendering of the prompts;
    - ``measured format``: the teacher's own completions again, after the student's rendering of the prompts:
      how much the student's format alone changes the teacher's grades (0 when both render the same ids).

    ``scorer`` is the teacher as a ``Teacher`` (``compute_logprobs``); ``teacher`` its model when in-process,
    else its own completions come from ``compute_top_k`` one token at a time, or are skipped."""
    s_prompts = encode_probes(student_tokenizer, examples, chat_template)
    s_completions, s_cut = greedy(student, student_tokenizer, s_prompts, max_new_tokens)
    on_student, s_tokens = _mean_completion_logprob(scorer, s_prompts, s_completions)
    n = len(examples)
    student_part = (
        f"teacher log-prob/token {on_student:.2f} on the student's greedy completions ({s_tokens} "
        f"tokens, {s_cut}/{n} at the limit)"
    )
    t_prompts = encode_probes(teacher_tokenizer, examples, chat_template)
    try:
        if teacher is not None:
            t_completions, t_cut = greedy(teacher, teacher_tokenizer, t_prompts, max_new_tokens)
        else:
            t_completions, t_cut = greedy_by_top1(scorer, t_prompts, teacher_stops, max_new_tokens)
    except (MentorError, AttributeError) as exc:  # a server without prompt log-probs cannot generate for us
        reason = " ".join(str(exc).split())[:80]
        return [
            Finding(OK, "measured", f"{student_part}; its own completions skipped ({reason})"),
            Finding(SKIP, "measured format", "needs the teacher's own completions"),
        ]
    own, t_tokens = _mean_completion_logprob(scorer, t_prompts, t_completions)
    gap = own - on_student
    detail = f"{student_part}, {own:.2f} on its own ({t_tokens}, {t_cut}/{n}): gap {gap:.2f} nats"
    measured = (
        Finding(WARN, "measured", f"{detail} (over {GAP_WARN}: the teacher finds the student's turns unlike its own)")
        if gap > GAP_WARN
        else Finding(OK, "measured", detail)
    )
    moved, _ = _mean_completion_logprob(scorer, s_prompts, t_completions)
    shift = own - moved
    detail = (
        f"the teacher's own completions {own:.2f} after its prompts, {moved:.2f} after the student's: its "
        f"grades move {shift:.2f} nats/token with the student's format"
    )
    return [
        measured,
        Finding(WARN, "measured format", f"{detail} (over {FORMAT_WARN})")
        if shift > FORMAT_WARN
        else Finding(OK, "measured format", detail),
    ]


# --- the command --------------------------------------------------------------------------------------------


@dataclass
class CheckOptions:
    student: str
    teacher: str
    prompts: str = ""
    chat_template: bool | None = None
    max_new_tokens: int = 256
    measure_prompts: int = 4
    measure_tokens: int = 48
    dtype: str = "float32"
    device: str = "cpu"
    teacher_tokenizer: str = ""
    teacher_api_key: str = ""
    teacher_timeout: float = 120.0


def run_check(options: CheckOptions) -> list[Finding]:
    """Every check of ``options.student`` against ``options.teacher``: cheap ones first; weights load only when the
    vocabularies agree (a vocabulary mismatch is found in seconds)."""
    from mentor.models.loading import load_model, load_tokenizer
    from mentor.score.http import is_url

    if options.measure_prompts < 0 or options.measure_tokens < 1 or options.max_new_tokens < 1:
        raise MentorError("--measure-prompts must be at least 0, --measure-tokens and --max-new-tokens at least 1")
    records = _records(options.prompts)
    student_tokenizer = load_tokenizer(options.student, "student")
    remote = is_url(options.teacher)
    scorer = _server(options) if remote else None
    teacher_tokenizer = _server_tokenizer(scorer, options) if remote else load_tokenizer(options.teacher, "teacher")
    findings = tokenizer_findings(student_tokenizer, teacher_tokenizer)
    if blocking(findings):
        reason = "the vocabularies differ" if findings[0].verdict == FAIL else "the special tokens differ"
        return findings + [
            Finding(SKIP, name, f"not run: {reason}, no weights were loaded")
            for name in ("head sizes", "end of turn", "generation config", "context length", "measured")
        ]
    student = load_model(options.student, options.dtype, options.device, what="student")
    teacher, teacher_context = None, None
    if remote:
        teacher_context = _server_context(scorer)
    else:
        from mentor.score.local import LocalTeacher

        teacher = load_model(options.teacher, options.dtype, options.device, what="teacher")
        scorer = LocalTeacher(teacher, student_tokenizer.pad_token_id, batch_size=max(1, options.measure_prompts))
    lengths = (
        [len(ids) for ids in encode_probes(student_tokenizer, records, options.chat_template)] if records else None
    )
    findings += model_findings(
        student_tokenizer, teacher_tokenizer, student, teacher, teacher_context, lengths, options.max_new_tokens
    )
    findings.extend(
        _measured_or_skip(
            findings,
            scorer,
            student,
            student_tokenizer,
            teacher_tokenizer,
            probe_examples(records, options.measure_prompts),
            min(options.measure_tokens, options.max_new_tokens),
            options.chat_template,
            teacher,
        )
    )
    if remote:
        findings.append(
            Finding(
                SKIP,
                "served teacher",
                "not checked on a server: the teacher's head size and "
                "generation config" + ("" if teacher_context else ", its context length"),
            )
        )
    return findings


def _measured_or_skip(
    findings, scorer, student, student_tokenizer, teacher_tokenizer, examples, max_new_tokens, chat_template, teacher
) -> list[Finding]:
    if not examples:
        return [Finding(SKIP, "measured", "--measure-prompts 0")]
    if blocking(findings):
        return [Finding(SKIP, "measured", "not run after a FAIL above")]
    # a teacher that cannot score (a server down or answering garbage) is the error training would stop on:
    # it propagates as that one line, not as a warning followed by the same failure
    stops = stop_token_ids(teacher_tokenizer, teacher)
    return measured_findings(
        scorer, student, student_tokenizer, teacher_tokenizer, examples, max_new_tokens, chat_template, teacher, stops
    )


def _records(path: str):
    if not path:
        return []
    from mentor.data.prompts import load_examples

    return load_examples(path)


def _server(options: CheckOptions):
    from mentor.backends import API_KEY_ENV
    from mentor.score.http import HTTPTeacher

    return HTTPTeacher(
        options.teacher,
        api_key=options.teacher_api_key or os.environ.get(API_KEY_ENV),
        timeout=options.teacher_timeout,
        batch_size=max(1, options.measure_prompts),
    )


def _server_tokenizer(scorer, options: CheckOptions):
    from mentor.score.http import remote_teacher_tokenizer

    return remote_teacher_tokenizer(scorer, options.teacher_tokenizer)


def _server_context(scorer) -> int | None:
    value = scorer.model_info().get("max_model_len")  # vLLM states it; mentor serve-teacher does not
    return value if isinstance(value, int) and value > 0 else None


def add_check_parser(sub) -> None:
    check = sub.add_parser(
        "check",
        help="will this teacher and student work together? (vocabularies, turns, "
        "templates, contexts, and a measured check; exit 2 on a blocking mismatch)",
    )
    check.add_argument("--student", required=True, help="the student: a directory, a .gguf file or a hub id")
    check.add_argument(
        "--teacher",
        required=True,
        help="the teacher: a directory, a .gguf file, a hub id or a URL "
        "(http://host:port/v1: vLLM, SGLang, mentor serve-teacher)",
    )
    check.add_argument(
        "--prompts",
        default="",
        help="JSONL of `prompt` or `messages` records: their lengths are "
        "checked against the contexts, the first few are measured",
    )
    check.add_argument(
        "--chat-template",
        action="store_true",
        default=None,
        help="wrap plain `prompt` records in each tokenizer's chat template, as distill's flag does "
        "(default: as distill does with --prompts, never; for the built-in questions, where "
        "a side has a template)",
    )
    check.add_argument("--max-new-tokens", type=int, default=256, help="as distill's: checked against the contexts")
    check.add_argument("--measure-prompts", type=int, default=4, help="prompts of the measured check (0: skip it)")
    check.add_argument("--measure-tokens", type=int, default=48, help="greedy tokens per measured completion")
    check.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    check.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    check.add_argument("--teacher-tokenizer", default="", help="a served teacher's tokenizer (default: ask the server)")
    check.add_argument(
        "--teacher-api-key", default="", help="bearer key for a served teacher (or $MENTOR_TEACHER_API_KEY)"
    )
    check.add_argument("--teacher-timeout", type=float, default=120.0, help="seconds per request to a served teacher")
    check.set_defaults(func=_main)


def _main(args) -> None:
    from mentor.recipes.common import quiet_transformers

    quiet_transformers()
    options = CheckOptions(**{name: getattr(args, name) for name in CheckOptions.__dataclass_fields__})
    if options.chat_template is None and options.prompts:
        options.chat_template = False  # distill's default for plain `prompt` records
    findings = run_check(options)
    print(screen(findings, f"mentor check: student {options.student}, teacher {options.teacher}"), flush=True)
    failed = blocking(findings)
    if failed:
        raise MentorError(f"blocking mismatch ({', '.join(f.check for f in failed)}): see the FAIL lines above")


# --- mentor distill's start-up check -------------------------------------------------------------------------


def startup_check(config, tokenizer):
    """``mentor distill``'s first step: the cheap checks now (a FAIL stops the run with one line before any
    weights load), the rest when the returned loader's ``report()`` is called, once everything is loaded.
    Returns the teacher loader ``check_teacher`` would
    (``student -> LoadedTeacher``), or None where the check does not apply (``--no-check``, one teacher per
    data set): then the caller uses ``check_teacher``."""
    from mentor.backends import check_teacher
    from mentor.config import named_paths
    from mentor.models.loading import load_tokenizer
    from mentor.score.http import is_url, remote_teacher_tokenizer

    if not getattr(config, "check", True) or named_paths(config.teacher) is not None:
        return None
    pending: list = []  # the checks that need the loaded models, for ``report()``
    if is_url(config.teacher):
        load_served = check_teacher(config.teacher, config, tokenizer)  # its vocabulary check fails in one line

        def load(student):
            loaded = load_served(student)
            teacher_tokenizer = remote_teacher_tokenizer(loaded.teacher, config.teacher_tokenizer)
            findings = tokenizer_findings(tokenizer, teacher_tokenizer)
            _stop_on(findings)
            pending.append(
                lambda: _finish(
                    config,
                    findings,
                    tokenizer,
                    teacher_tokenizer,
                    student,
                    None,
                    loaded.teacher,
                    _server_context(loaded.teacher),
                )
            )
            return loaded

        return _with_report(load, pending)
    teacher_tokenizer = load_tokenizer(config.teacher, "teacher")
    findings = tokenizer_findings(tokenizer, teacher_tokenizer)
    _stop_on(findings)

    def load(student):
        from mentor.backends import LoadedTeacher
        from mentor.evaluation.flops import MatmulParams
        from mentor.models.loading import load_model
        from mentor.score.local import LocalTeacher

        model = load_model(config.teacher, config.dtype, what="teacher").to(student.device)
        scorer = LocalTeacher(model, tokenizer.pad_token_id, config.micro_batch_size)
        pending.append(lambda: _finish(config, findings, tokenizer, teacher_tokenizer, student, model, scorer, None))
        return LoadedTeacher(scorer, MatmulParams.of(model).total)

    return _with_report(load, pending)


def _with_report(load, pending: list):
    """The teacher loader, with ``report()``: the checks that need both models, run when the recipe asks (once
    every other input has been checked, before the run directory is written), so a bad flag found later is
    still the only line the user sees."""

    def report() -> None:
        while pending:
            pending.pop(0)()

    load.report = report
    return load


STARTUP_PROMPTS, STARTUP_TOKENS = 2, 32  # the measured check at start-up: a few seconds, not a benchmark


def _finish(config, findings, tokenizer, teacher_tokenizer, student, teacher, scorer, teacher_context) -> None:
    """The checks that need the loaded student (and teacher), logged as one screen; a FAIL stops the run."""
    findings = findings + model_findings(
        tokenizer, teacher_tokenizer, student, teacher, teacher_context, None, config.max_new_tokens
    )
    examples = _startup_examples(config)
    findings.extend(
        _measured_or_skip(
            findings,
            scorer,
            student,
            tokenizer,
            teacher_tokenizer,
            examples,
            min(STARTUP_TOKENS, config.max_new_tokens),
            config.chat_template,
            teacher,
        )
    )
    shown = findings if not config.quiet else [f for f in findings if f.verdict in (WARN, FAIL)]
    for finding in shown:
        level, style = _LOGGED[finding.verdict]
        logger.log(level, finding.line(), extra={"style": style})
    _stop_on(findings)


def _startup_examples(config):
    from mentor.data.prompts import Example

    if config.prompts:
        from mentor.config import named_paths

        path = next(iter((named_paths(config.prompts) or {"": config.prompts}).values()))
        return probe_examples(_records(path)[:STARTUP_PROMPTS], STARTUP_PROMPTS)
    if config.task:
        from mentor.tasks.registry import get_task

        problems = get_task(config.task).train_problems(STARTUP_PROMPTS, config.seed)
        return [Example(prompt=problem.prompt) for problem in problems]
    return probe_examples(None, STARTUP_PROMPTS)


# a verdict's log level, and its colour in the CLI (mentor.logs.CLIHandler)
_LOGGED = {
    OK: (logging.INFO, "green"),
    SKIP: (logging.INFO, "dim"),
    WARN: (logging.WARNING, "yellow"),
    FAIL: (logging.ERROR, "red"),
}


def _stop_on(findings: list[Finding]) -> None:
    failed = blocking(findings)
    if failed:
        raise MentorError(
            f"mentor check: {failed[0].check}: {failed[0].detail} (`mentor check` lists every check; "
            "--no-check skips them)"
        )
