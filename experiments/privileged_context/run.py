"""Issue 22 part 1: privileged-context self-distillation against mid-training on SmolLM2-135M-Instruct.

Experiment B's internal documents and questions; the protocol is ``protocol.md`` beside this file (v1), fixed
before any run.

Rows: experiment B's base and its two mid-training rows, re-run with B's code (``experiments.continual.run``);
T, the base prompted with the asked-about employee's memo (the teacher's view, internal QA only); P, OPD from
the base with ``--teacher self`` whose records carry the memo as ``context``; C, the same OPD without context.

Each stage writes its output under ``--out`` as it finishes (``state.json``: the items measured, the stages
trained, their wall and CPU seconds); running the same command again skips finished stages (an interrupted
training run starts again). Sizes come from the protocol; the knobs (experiment B's ``RealScale`` fields, hidden
from ``--help``) are for tests and trials at other sizes.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python -m experiments.privileged_context.run --quiet  # ~75 min
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python -m experiments.privileged_context.run --quick --quiet \\
        --out runs/privileged_context_quick
    mentor bench privileged [--quick]  # the same
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from dataclasses import asdict, replace
from pathlib import Path

from experiments.continual import run as continual
from experiments.continual.chat_prompts import generic_chat_prompts
from experiments.continual.run import (
    REAL_MODEL,
    CompanyDocs,
    RealScale,
    _evaluate_row,
    _midtrain,
    _own_replies,
    _timed,
    _with_wilson,
    ifeval_subset,
    paired_change,
    resolve_inputs,
    summarize,
)
from mentor.errors import MentorError
from mentor.tasks.base import Problem

HERE = Path(__file__).resolve().parent
PROTOCOL = HERE / "protocol.md"
PROTOCOL_VERSION = 1
TEMPLATE = "Internal document:\n{context}\n\nQuestion: {prompt}"  # the teacher's prompt (protocol)

# experiment B's sizes; P and C: 60 steps of 4 prompts x 2 samples (B's distill_prompts, group_size), lr 1e-4,
# warmup steps // 10 = 6 then linear decay, 48 new tokens
FULL = replace(continual.FULL, self_distill_steps=60, distill_tokens=48, distill_lr=1e-4)
# the protocol's "Allowed revision" quick run: 12 people, 30 IFEval prompts, 24 steps (B's --quick otherwise)
QUICK = replace(continual.QUICK, self_distill_steps=24, distill_tokens=48, distill_lr=1e-4)

BASE, MID_100, MID_70 = continual.ROWS[:3]
TEACHER_VIEW = "T: base, the memo in its prompt (the teacher's view)"
PRIVILEGED = "P: OPD, teacher self reading the memo"
CONTROL = "C: OPD, teacher self without context"
ROWS = (BASE, MID_100, MID_70, TEACHER_VIEW, PRIVILEGED, CONTROL)
CHANGES = ((PRIVILEGED, BASE), (PRIVILEGED, CONTROL), (PRIVILEGED, MID_100), (PRIVILEGED, MID_70))
# each row's stages (state.json's timings): what the row cost
ROW_STAGES = {
    BASE: ("base: chat data + evaluation",),
    MID_100: ("train mid_100", f"evaluate {MID_100}"),
    MID_70: ("train mid_70", f"evaluate {MID_70}"),
    TEACHER_VIEW: (f"evaluate {TEACHER_VIEW}",),
    PRIVILEGED: ("train privileged", f"evaluate {PRIVILEGED}"),
    CONTROL: ("train control", f"evaluate {CONTROL}"),
}


# --- the data -------------------------------------------------------------------------------------------------
def questions_with_memos(docs: CompanyDocs) -> list[tuple[Problem, str]]:
    """Each internal-QA question with the memo of the employee it asks about."""
    problems = docs.test_problems()  # two per employee, in the order of docs.facts
    pairs = []
    for i, (fact, memo) in enumerate(zip(docs.facts, docs.documents())):
        for problem in problems[2 * i : 2 * i + 2]:
            if fact.person not in problem.prompt or fact.person not in memo:
                raise MentorError(f"internal error: question {problem.prompt!r} is not about {fact.person}")
            pairs.append((problem, memo))
    return pairs


def question_records(docs: CompanyDocs, with_context: bool) -> list[dict]:
    """The OPD prompt records: each question as a chat user turn; with the asked-about memo as ``context`` (P)
    or without (C)."""
    return [
        {"messages": [{"role": "user", "content": problem.prompt}]} | ({"context": memo} if with_context else {})
        for problem, memo in questions_with_memos(docs)
    ]


def encode_records(tokenizer, records: list[dict]) -> list:
    """The records as ``EncodedExample``s by mentor's own reader and encoder: a record with ``context`` gets the
    teacher's prompt ids (the memo filled into the user turn by ``TEMPLATE``), one without gets none."""
    from mentor.data.prompts import TeacherPrompts, encode_examples, parse_example

    examples = [parse_example(r, f"question {i + 1}") for i, r in enumerate(records)]
    encoded, skipped = encode_examples(tokenizer, examples, teacher=TeacherPrompts(tokenizer, template=TEMPLATE))
    if skipped:  # no limit is given, so nothing is skipped; said if that ever changes
        raise MentorError(f"{skipped} of {len(records)} questions were skipped while encoding")
    return encoded


def teacher_view_problems(docs: CompanyDocs) -> list[Problem]:
    """Row T's questions: each filled into ``TEMPLATE`` with its memo, as the teacher of P reads it."""
    from mentor.data.prompts import fill_context

    return [Problem(fill_context(TEMPLATE, memo, p.prompt), p.answer) for p, memo in questions_with_memos(docs)]


# --- the rows -------------------------------------------------------------------------------------------------
def evaluate_teacher_view(model, tokenizer, docs: CompanyDocs, scale: RealScale) -> dict:
    """Row T: internal QA only, the memo in the chat user turn, greedy, ``qa_tokens`` as every row."""
    from mentor.evaluation.accuracy import evaluate

    qa = evaluate(
        model,
        tokenizer,
        docs,
        teacher_view_problems(docs),
        scale.qa_tokens,
        batch_size=scale.eval_batch,
        chat_template=True,
    )
    return {"qa": [bool(c) for c in qa.correct], "qa_replies": qa.completions[:4]}


def distill_config(out: Path, model_path: Path, scale: RealScale, quiet: bool):
    """P's and C's config (the same for both: the context is in P's examples, not in the config)."""
    from mentor.config import DistillConfig

    return DistillConfig(
        student=str(model_path),
        teacher="self",
        prompts="(built in)",
        check=False,  # the prompts come from Python (examples=); `mentor check` is skipped for self anyway
        output_dir=str(out),
        steps=scale.self_distill_steps,
        batch_size=scale.distill_prompts,
        group_size=scale.group_size,
        max_new_tokens=scale.distill_tokens,
        temperature=1.0,
        divergence="sampled",
        kl_coef=1.0,
        kl_discount=0.0,
        learning_rate=scale.distill_lr,
        lr_schedule="linear",
        warmup_steps=max(1, scale.self_distill_steps // 10),
        teacher_context_template=TEMPLATE,  # recorded in config.yaml; the examples carry the teacher's ids
        seed=0,
        overwrite=True,  # an unfinished stage starts again
        quiet=quiet,
    )


def self_distill(out: Path, model_path: Path, tokenizer, examples: list, scale: RealScale, quiet: bool) -> Path:
    from mentor.recipes.distill import run_distill

    trainer, _ = run_distill(distill_config(out, model_path, scale, quiet), tokenizer=tokenizer, examples=examples)
    return trainer.run.path / "final"


def run_costs(run: Path) -> dict:
    """What an OPD run's ``metrics.jsonl`` says it cost and sampled: the teacher's and the sampler's tokens
    (summed over steps), completion length and the share cut at ``--max-new-tokens`` (means over steps)."""
    steps = [
        r
        for r in (json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip())
        if "teacher_tokens" in r
    ]
    mean = lambda key: sum(r.get(key, 0.0) for r in steps) / max(len(steps), 1)  # noqa: E731
    return {
        "steps": len(steps),
        "teacher_tokens": sum(r["teacher_tokens"] for r in steps),
        "sampled_tokens": sum(r.get("sampled_tokens", 0.0) for r in steps),
        "completion_length": mean("completion_length"),
        "truncated_fraction": mean("truncated_fraction"),
        "empty_or_cut_every_step": all(
            r.get("completion_length", 0.0) == 0 or r.get("truncated_fraction", 0.0) == 1.0 for r in steps
        ),
    }


def paired_rows(items: dict[str, dict]) -> list[dict]:
    """The protocol's paired changes (P against base, C and both mid-training rows), on the same items."""
    return [paired_change(items, row, against) for row, against in CHANGES]


def summarize_row(e: dict) -> dict:
    """A row's numbers with intervals; row T has internal QA only."""
    if "prompt_strict" not in e:
        return {"internal_qa": _with_wilson(sum(e["qa"]), len(e["qa"]))}
    return summarize(e)


# --- the run --------------------------------------------------------------------------------------------------
class State:
    """``state.json`` under ``--out``: written after every stage, read on a rerun (the same sizes only)."""

    def __init__(self, out: Path, scale: RealScale, quick: bool):
        self.path = out / "state.json"
        fresh = {"scale": asdict(scale), "quick": quick, "timings": {}, "items": {}, "trained": {}, "facts": {}}
        self.data = json.loads(self.path.read_text()) if self.path.exists() else fresh
        if self.data["scale"] != fresh["scale"]:
            raise MentorError(
                f"{out} holds a run at other sizes ({self.path}): choose another --out, or delete it to start again"
            )
        self.timings, self.items, self.trained = self.data["timings"], self.data["items"], self.data["trained"]

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        tmp.replace(self.path)

    def done(self, stage: str, out: Path) -> bool:
        return stage in self.trained and (out / stage / "final").exists()


def _save_examples(path: Path, examples: list) -> None:
    path.write_text(json.dumps([asdict(e) for e in examples]))


def _load_examples(path: Path) -> list:
    from mentor.data.prompts import EncodedExample

    return [EncodedExample(**e) for e in json.loads(path.read_text())]


def run_privileged(
    out: str | Path = "runs/privileged_context",
    quick: bool = False,
    quiet: bool = False,
    model: str | None = None,
    ifeval: str | None = None,
    **overrides,
) -> dict:
    from mentor.models.loading import load_model, load_tokenizer
    from mentor.recipes.common import quiet_transformers
    from mentor.train.progress import console

    quiet_transformers()
    scale = replace(QUICK if quick else FULL, **{k: v for k, v in overrides.items() if v is not None})
    model_path, ifeval_path = resolve_inputs(model, ifeval)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if (out / "protocol.md").resolve() != PROTOCOL:
        shutil.copyfile(PROTOCOL, out / "protocol.md")  # beside the results, as fixed before the run
    state = State(out, scale, quick)
    console.rule("Privileged context (issue 22): self-distillation with the memo vs mid-training on it")
    t0 = time.perf_counter()
    tokenizer = load_tokenizer(str(model_path))
    docs = CompanyDocs(scale.people)
    ifeval_problems = ifeval_subset(ifeval_path, scale.ifeval_prompts)
    documents = continual._document_examples(tokenizer, docs)
    chat_file = out / "chat_examples.json"  # the base's replies: the 70/30 mix needs them after a resume
    items, timings = state.items, state.timings

    if BASE not in items or TEACHER_VIEW not in items or not chat_file.exists():
        base = load_model(str(model_path))
        if BASE not in items or not chat_file.exists():
            with _timed(timings, ROW_STAGES[BASE][0]):
                n_chat = round(len(documents) * 0.3 / 0.7)
                chat_prompts = generic_chat_prompts(n_chat, seed=1)  # B's, the same seed
                _save_examples(chat_file, _own_replies(base, tokenizer, chat_prompts, scale))
                items[BASE] = _evaluate_row(base, tokenizer, docs, ifeval_problems, scale)
            state.save()
        if TEACHER_VIEW not in items:
            with _timed(timings, ROW_STAGES[TEACHER_VIEW][0]):
                items[TEACHER_VIEW] = evaluate_teacher_view(base, tokenizer, docs, scale)
            state.save()
        del base
    chat = _load_examples(chat_file)

    records = {
        "privileged": question_records(docs, with_context=True),
        "control": question_records(docs, with_context=False),
    }
    for name, rows in records.items():  # the records, as a user would give them to `mentor distill --prompts`
        (out / f"{name}_records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    stages = {
        "mid_100": (MID_100, lambda: _midtrain(out / "mid_100", model_path, documents, scale, quiet)),
        "mid_70": (MID_70, lambda: _midtrain(out / "mid_70", model_path, documents + chat, scale, quiet)),
        "privileged": (
            PRIVILEGED,
            lambda: self_distill(
                out / "privileged",
                model_path,
                tokenizer,
                encode_records(tokenizer, records["privileged"]),
                scale,
                quiet,
            ),
        ),
        "control": (
            CONTROL,
            lambda: self_distill(
                out / "control", model_path, tokenizer, encode_records(tokenizer, records["control"]), scale, quiet
            ),
        ),
    }
    for name, (label, train) in stages.items():
        if not state.done(name, out):
            items.pop(label, None)  # a retrained row is measured again
            with _timed(timings, f"train {name}"):
                train()
            state.trained[name] = True
            state.save()
        if label not in items:
            with _timed(timings, f"evaluate {label}"):
                items[label] = _evaluate_row(
                    load_model(str(out / name / "final")), tokenizer, docs, ifeval_problems, scale
                )
            state.save()

    result = {
        "protocol": f"experiments/privileged_context/protocol.md (v{PROTOCOL_VERSION})",
        "protocol_version": PROTOCOL_VERSION,
        "commit": _commit(),
        "quick": quick,
        "scale": asdict(scale),
        "model": str(model_path),
        "ifeval": str(ifeval_path),
        "template": TEMPLATE,
        "rows": {label: summarize_row(items[label]) for label in ROWS},
        "changes": paired_rows(items),
        "row_seconds": {label: _row_seconds(timings, label) for label in ROWS},
        "costs": {PRIVILEGED: run_costs(out / "privileged"), CONTROL: run_costs(out / "control")},
        "facts": len(docs.facts),
        "documents": len(documents),
        "chat_examples": len(chat),
        "seconds": timings,
        "minutes_this_call": (time.perf_counter() - t0) / 60,
        "items": {label: items[label] for label in ROWS},
    }
    (out / "results.json").write_text(json.dumps(result, indent=1))
    from experiments.privileged_context.report import write_report

    write_report(result, out)
    return result


def _row_seconds(timings: dict, label: str) -> dict:
    stages = [timings[s] for s in ROW_STAGES[label] if s in timings]
    return {"wall": sum(s["wall"] for s in stages), "cpu": sum(s["cpu"] for s in stages)}


def _commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "experiments", "mentor"],
            cwd=HERE.parents[1],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + (" (with uncommitted changes)" if dirty else "")


# --- command line ---------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags of ``python -m experiments.privileged_context.run`` and ``mentor bench privileged``."""
    parser.add_argument("--out", default="runs/privileged_context", help="where state, runs and results go")
    parser.add_argument(
        "--quick", action="store_true", help="the protocol's quick run: 12 employees, 30 IFEval prompts, 24 steps"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--model", default=None, help=f"the SmolLM2-135M-Instruct GGUF (default: {REAL_MODEL})")
    parser.add_argument("--ifeval", default=None, help="IFEval's input_data.jsonl (default: ../shared/real/...)")
    for name, field in RealScale.__dataclass_fields__.items():  # experiment B's knobs: tests, other sizes
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            type=float if field.type in ("float", float) else int,
            default=None,
            help=argparse.SUPPRESS,
        )
    return parser


def run_from_args(args: argparse.Namespace) -> dict:
    knobs = {k: getattr(args, k) for k in RealScale.__dataclass_fields__}
    return run_privileged(args.out, quick=args.quick, quiet=args.quiet, model=args.model, ifeval=args.ifeval, **knobs)


def main(argv: list[str] | None = None) -> None:
    parser = add_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    try:
        run_from_args(parser.parse_args(argv))
    except MentorError as error:
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    main()
