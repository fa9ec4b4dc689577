"""Local benchmark files in their public schemas, as tasks (problems + grader) for eval, RL and OPD.

    gsm8k      {"question", "answer": "... #### 72"}                       graded by the final number
    math       {"problem", "solution": "... \\boxed{...}", "answer"?, "level", "type"}  graded by math-verify
               (MATH-500's ``answer`` when present, else the solution's last ``\\boxed{}``)
    humaneval  {"task_id", "prompt", "canonical_solution", "test", "entry_point"}  graded by running tests
    ifeval     {"key", "prompt", "instruction_id_list", "kwargs"}          graded by IFEval's checkers (strict)

Files are JSONL (one record per line) or a JSON list. Use one as ``--task SCHEMA:PATH``, e.g.
``mentor eval run_dir --task gsm8k:data/gsm8k_test.jsonl``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

from mentor.data.prompts import read_data_file, read_jsonl
from mentor.errors import MentorError
from mentor.tasks.base import Problem
from mentor.tasks.graders import code_passes, grade_many, instructions_followed, math_match, numeric_match


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (braces balanced), as MATH writes its answers."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, begin = 0, start + len("\\boxed{")
    for i in range(begin, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            if depth == 0:
                return text[begin:i]
            depth -= 1
    return None


def _text(record: dict, field: str) -> str:
    """A field that must hold text (a prompt, a solution): anything else is the record's error, not a crash later."""
    value = record[field]
    if not isinstance(value, str):
        raise TypeError(f"{field} must be a string, not {type(value).__name__}")
    return value


def _gsm8k(record: dict) -> Problem:
    answer = str(record["answer"])
    final = answer.split("####")[-1].strip().replace(",", "")
    return Problem(prompt=_text(record, "question"), answer=final, solution=answer)


def _math(record: dict) -> Problem:
    """MATH-500 gives the answer in ``answer``; MATH only as the last ``\\boxed{}`` of the solution."""
    _text(record, "problem")
    answer = record.get("answer") or last_boxed(_text(record, "solution"))
    if answer is None:
        raise ValueError("the solution has no \\boxed{} answer")
    return Problem(
        prompt=record["problem"],
        answer=str(answer),
        solution=record["solution"],
        meta={k: record[k] for k in ("level", "type", "subject", "unique_id") if k in record},
    )


def _humaneval(record: dict) -> Problem:
    meta = {k: record[k] for k in ("task_id", "prompt", "test", "entry_point")}
    return Problem(prompt=_text(record, "prompt"), answer="", solution=record.get("canonical_solution", ""), meta=meta)


def _ifeval(record: dict) -> Problem:
    meta = {"key": record.get("key"), "instruction_id_list": record["instruction_id_list"], "kwargs": record["kwargs"]}
    return Problem(prompt=_text(record, "prompt"), answer="", meta=meta)


# schema -> (record -> Problem, required fields, grader)
SCHEMAS: dict[str, tuple[Callable[[dict], Problem], tuple[str, ...], Callable]] = {
    "gsm8k": (_gsm8k, ("question", "answer"), numeric_match),
    "math": (_math, ("problem", "solution"), math_match),
    "humaneval": (_humaneval, ("prompt", "test", "entry_point"), code_passes),
    "ifeval": (_ifeval, ("prompt", "instruction_id_list", "kwargs"), instructions_followed),
}


def load_problems(schema: str, path: str | Path) -> list[Problem]:
    """Every record of ``path`` as a Problem; a record missing a field fails with its line number."""
    if schema not in SCHEMAS:
        raise MentorError(f"unknown data schema {schema!r}: choose one of {', '.join(SCHEMAS)}")
    convert, required, _ = SCHEMAS[schema]
    path = Path(path)
    records = _read_json_array(path) if path.suffix == ".json" else read_jsonl(path)
    problems = []
    for number, record in enumerate(records, 1):
        if not isinstance(record, dict):
            raise MentorError(f"{path}:{number}: a {schema} record must be a JSON object, not {type(record).__name__}")
        missing = [f for f in required if f not in record]
        if missing:
            raise MentorError(f"{path}:{number}: a {schema} record needs {', '.join(missing)}")
        try:
            problems.append(convert(record))
        except (ValueError, KeyError, TypeError) as exc:
            raise MentorError(f"{path}:{number}: not a valid {schema} record ({exc})") from None
    return problems


def _read_json_array(path: Path) -> list:
    """A ``.json`` file holding one array of records (the JSONL path checks its own lines)."""
    try:
        records = json.loads(read_data_file(path))
    except json.JSONDecodeError as exc:
        raise _not_json(path, exc.msg) from None
    except UnicodeDecodeError:
        raise _not_json(path, "not UTF-8 text") from None
    except RecursionError:
        raise _not_json(path, "nested too deeply") from None
    if not isinstance(records, list):
        raise MentorError(f"{path}: a .json data file must hold an array of records, not {type(records).__name__}")
    return records


def _not_json(path: Path, reason: str) -> MentorError:
    return MentorError(f"{path}: not valid JSON ({reason}): a .json data file holds one array of records")


class FileTask:
    """A task backed by a local file: the file is the problem set; the schema picks the grader."""

    def __init__(self, schema: str, path: str | Path):
        self.problems = load_problems(schema, path)
        self.name = f"{schema}:{Path(path).name}"
        self._grader = SCHEMAS[schema][2]

    def test_problems(self, n: int) -> list[Problem]:
        return self.problems[:n]

    def train_problems(self, n: int, seed: int) -> list[Problem]:
        """The file's problems in a seeded order, repeated to ``n`` (a file is one split: pass the train file)."""
        order = list(self.problems)
        random.Random(seed).shuffle(order)
        return [order[i % len(order)] for i in range(n)]

    def grade(self, completion: str, problem: Problem) -> float:
        return self._grader(completion, problem)

    def grade_many(self, completions: list[str], problems: list[Problem]) -> list[float]:
        """Grades in parallel (HumanEval's programs run one per core)."""
        return grade_many(self._grader, completions, problems)


def task_from_spec(spec: str) -> FileTask | None:
    """``SCHEMA:PATH`` -> a FileTask; anything else -> None (a built-in task name)."""
    schema, sep, path = spec.partition(":")
    if not sep or schema not in SCHEMAS:
        return None
    if not Path(path).exists():
        raise MentorError(f"data file {path!r} does not exist")
    return FileTask(schema, path)
