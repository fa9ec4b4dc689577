"""``mentor eval``: score a model or a run directory on a task's held-out split (greedy, or pass@k).

The result table goes to stdout (progress and notes to stderr). Every sample is written to a JSONL file of
records: prompt, completion, reference, correct, and for IFEval the verdict on each instruction. An
existing file is never overwritten: the records go to the first free ``NAME-1.jsonl``, ``NAME-2.jsonl``...
"""

from __future__ import annotations

import json
import logging
import time
from math import comb
from pathlib import Path

import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mentor.errors import MentorError
from mentor.evaluation.accuracy import evaluate
from mentor.models.chat import has_chat_template
from mentor.models.loading import load_model, load_tokenizer
from mentor.recipes.common import quiet_transformers
from mentor.tasks.base import Problem
from mentor.tasks.graders import get_grader, ifeval_result
from mentor.tasks.registry import get_task

logger = logging.getLogger(__name__)
stdout = Console()  # results; the notes are the ``mentor`` logger's (stderr in the CLI)
RECORDS = "eval_samples.jsonl"


def resolve_model_path(path: str) -> str:
    """A run directory evaluates its final model (one without ``final/`` has nothing to evaluate yet)."""
    final = Path(path) / "final"
    if not (Path(path) / "config.yaml").exists():
        return path
    if not final.is_dir():
        raise MentorError(
            f"{path} is a run directory without final/ (the run has not finished): run its command "
            "again to finish it, or evaluate a model directory"
        )
    return str(final)


def pass_at_k(n: int, correct: int, k: int) -> float:
    """Unbiased pass@k from n samples of which ``correct`` passed (Chen et al. 2021, HumanEval)."""
    if n - correct < k:
        return 1.0
    return 1.0 - comb(n - correct, k) / comb(n, k)


class _Regraded:
    """A task whose grader is replaced (``--grader``), e.g. math-verify on a built-in task's answers."""

    def __init__(self, task, grader):
        self.task, self.name, self.grade = task, task.name, grader

    def test_problems(self, n):
        return self.task.test_problems(n)


def run_eval(args) -> dict:
    quiet_transformers()
    k = getattr(args, "k", 0) or args.samples
    if args.size < 1 or args.samples < 1 or not 1 <= k <= args.samples:
        raise MentorError("--size and --samples must be at least 1, and --k between 1 and --samples")
    if args.max_new_tokens < 1:
        raise MentorError(
            f"--max-new-tokens must be at least 1 (got {args.max_new_tokens}): the answer is sampled "
            "within this many tokens"
        )
    if args.samples > 1 and not args.temperature > 0:
        raise MentorError(
            f"--samples {args.samples} at --temperature {args.temperature} draws the same greedy "
            "answer every time, so pass@k would be pass@1: use a temperature above 0 (e.g. 0.8)"
        )
    path = resolve_model_path(args.model)
    task = get_task(args.task)  # a built-in name, or SCHEMA:PATH for a local gsm8k/math/humaneval/ifeval file
    if getattr(args, "grader", ""):
        task = _Regraded(task, get_grader(args.grader))
    is_ifeval = (getattr(args, "grader", "") or task.name.partition(":")[0]) == "ifeval"
    records_path = _records_path(args, path)
    tokenizer, model = load_tokenizer(path), load_model(path, getattr(args, "dtype", "float32"))
    chat_template = _use_chat_template(args, tokenizer)
    problems = task.test_problems(args.size)
    greedy = args.samples == 1
    sampler = _engine(args, model, tokenizer, path, problems, chat_template)
    passes = [0] * len(problems)
    samples, instructions = [], []  # a record per (problem, sample); IFEval's verdicts per sample
    start = time.perf_counter()
    for sample in range(args.samples):
        result = evaluate(
            model,
            tokenizer,
            task,
            problems,
            args.max_new_tokens,
            greedy=greedy,
            temperature=args.temperature,
            chat_template=chat_template,
            sampler=sampler,
        )
        passes = [count + ok for count, ok in zip(passes, result.correct)]
        for index, (problem, completion, ok) in enumerate(zip(problems, result.completions, result.correct)):
            samples.append(_record(index, sample, problem, completion, ok))
            if is_ifeval:
                instructions.append(ifeval_result(completion, problem))
                samples[-1].update(
                    reference={k: problem.meta[k] for k in ("instruction_id_list", "kwargs")},
                    **instructions[-1].as_record(),
                )
    seconds = time.perf_counter() - start
    if sampler is not None:
        sampler.close()
    accuracy = sum(pass_at_k(args.samples, c, k) for c in passes) / len(problems)
    metric = "accuracy (greedy)" if greedy else f"pass@{k} (n={args.samples}, T={args.temperature})"
    scores = {metric: accuracy}
    if is_ifeval:  # IFEval's four accuracies (over every sample when n > 1)
        from mentor.tasks.ifeval import ifeval_scores

        scores = ifeval_scores(instructions)
    _print_table(task.name, len(problems), path, scores, seconds, chat_template)
    for record in samples[: args.show]:
        stdout.print(
            f"  {escape(record['prompt'])}{escape(record['completion'])}   "
            f"[dim](reference {escape(str(record['reference']))})[/]",
            highlight=False,
            soft_wrap=True,
        )
    records_path = _write_records(records_path, samples)
    stdout.print(f"per-sample records: {records_path}", highlight=False, soft_wrap=True)
    record = {
        "task": task.name,
        "metric": metric,
        "accuracy": accuracy,
        "problems": len(problems),
        "model": path,
        "chat_template": chat_template,
        "seconds": round(seconds, 1),
        "records": str(records_path),
    }
    if is_ifeval:
        record["ifeval"] = scores
    if path != args.model:  # a run directory: keep the result next to its metrics
        with (Path(args.model) / "eval.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
    return record


def _engine(args, model, tokenizer, path: str, problems: list[Problem], chat_template: bool):
    """``--sampler vllm``: a vLLM engine holding ``model``, its context the longest prompt plus --max-new-tokens
    (a CPU's KV cache could not hold a long-context model's whole window); else None."""
    if getattr(args, "sampler", "hf") != "vllm":
        return None
    from mentor.data.prompts import Example, encode_prompt
    from mentor.sample.vllm import VLLMSampler

    longest = max(len(encode_prompt(tokenizer, Example(prompt=p.prompt), chat_template)) for p in problems)
    return VLLMSampler(
        model,
        tokenizer,
        path,
        args.max_new_tokens,
        args.temperature,
        dtype=args.dtype,
        max_model_len=longest + args.max_new_tokens,
    )


def _use_chat_template(args, tokenizer) -> bool:
    """``--chat-template``/``--no-chat-template``; by default a run directory is evaluated as it was trained
    (its config.yaml's ``chat_template``), any other model with its chat template when the tokenizer has one."""
    asked = getattr(args, "chat_template", None)
    if asked and not has_chat_template(tokenizer):
        raise MentorError(
            f"--chat-template: the tokenizer of {args.model} has no chat template: "
            "drop the flag (or pass --no-chat-template)"
        )
    if asked is None and (Path(args.model) / "config.yaml").is_file():
        trained = yaml.safe_load((Path(args.model) / "config.yaml").read_text(encoding="utf-8")) or {}
        asked = trained.get("chat_template") if isinstance(trained, dict) else None
    return has_chat_template(tokenizer) if asked is None else bool(asked) and has_chat_template(tokenizer)


def _record(index: int, sample: int, problem: Problem, completion: str, correct: bool) -> dict:
    record = {
        "problem": index,
        "sample": sample,
        "prompt": problem.prompt,
        "completion": completion,
        "reference": problem.answer or problem.solution,
        "correct": bool(correct),
    }
    ident = next((problem.meta[k] for k in ("task_id", "unique_id", "key") if k in problem.meta), None)
    return record if ident is None else {"id": ident, **record}


_LABELS = {
    "prompt_strict": "prompt-level strict",
    "instruction_strict": "instruction-level strict",
    "prompt_loose": "prompt-level loose",
    "instruction_loose": "instruction-level loose",
}


def _print_table(name: str, size: int, model: str, scores: dict, seconds: float, chat_template: bool) -> None:
    """One row per metric (IFEval has four), so the table fits a terminal however long the model path."""
    table = Table()
    table.add_column("metric")
    table.add_column("score", justify="right")
    for metric, value in scores.items():
        table.add_row(_LABELS.get(metric, metric), f"{value:.1%}")
    stdout.print(f"{name}: {size} held-out problems; model {model}", highlight=False, soft_wrap=True)
    stdout.print(table)
    logger.info(f"chat template {'on' if chat_template else 'off'}; {seconds:.1f}s sampling and grading")


def _records_path(args, model_path: str) -> Path:
    """``--records``, else ``eval_samples.jsonl`` in the run directory (evaluating a run) or the current one;
    a path that exists gets a numbered sibling instead, so no file is ever overwritten."""
    asked = getattr(args, "records", None)
    base = Path(asked) if asked else (Path(args.model) if model_path != args.model else Path(".")) / RECORDS
    if base.is_dir():
        raise MentorError(f"--records {base} is a directory: give a file name, e.g. {base / RECORDS}")
    if not base.parent.is_dir():
        raise MentorError(f"--records {base}: the directory {base.parent} does not exist")
    return base


def _write_records(base: Path, records: list[dict]) -> Path:
    """Write to ``base`` if it does not exist, else the first free ``stem-N.suffix`` (created exclusively)."""
    candidate, number = base, 0
    while True:
        try:
            with candidate.open("x", encoding="utf-8") as handle:
                for record in records:
                    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            return candidate
        except FileExistsError:
            number += 1
            candidate = base.with_name(f"{base.stem}-{number}{base.suffix}")
