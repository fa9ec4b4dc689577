"""Graders: ``completion -> reward in [0, 1]`` against a reference, for evaluation and for RL rewards.

- ``exact_match``: whitespace- and case-normalised string equality.
- ``numeric_match``: the final number of the completion (GSM8K's ``#### 42``, ``\\boxed{42}``, or the last
  number written) equals the reference number.
- ``math_match``: symbolic equivalence through ``math-verify`` (``\\frac{1}{2}`` == ``0.5``), for MATH.
- ``code_passes``: the completion's Python, followed by the reference tests, runs in a separate process
  with a timeout, no network and an empty working directory (HumanEval).
- ``instructions_followed``: IFEval's 25 verifiable instruction types (``mentor.tasks.ifeval``: google-research's
  checkers as lm-evaluation-harness maintains them), prompt-level strict.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction

from mentor.errors import MentorError

Grader = Callable[[str, object], float]


def _normalise(text: str) -> str:
    return " ".join(str(text).strip().lower().split()).rstrip(".")


def exact_match(completion: str, reference: object) -> float:
    return float(_normalise(completion) == _normalise(_answer_of(reference)))


# --- numbers -----------------------------------------------------------------------------------------
_NUMBER = r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?"


def extract_number(text: str) -> str | None:
    """The answer number of a completion: after ``####``, inside ``\\boxed{}``, else the last number."""
    for pattern in (
        rf"####\s*\$?\s*({_NUMBER})",
        rf"\\boxed\{{\s*({_NUMBER})\s*\}}",
        rf"answer is\s*:?\s*\$?\s*({_NUMBER})",
    ):
        found = re.findall(pattern, text, flags=re.IGNORECASE)
        if found:
            return found[-1]
    found = re.findall(_NUMBER, text)
    return found[-1] if found else None


def _as_fraction(number: str) -> Fraction | None:
    try:
        return Fraction(number.replace(",", "").rstrip("."))
    except (ValueError, ZeroDivisionError):
        return None


def numeric_match(completion: str, reference: object) -> float:
    got = extract_number(completion)
    want = extract_number(_answer_of(reference))
    if got is None or want is None:
        return 0.0
    a, b = _as_fraction(got), _as_fraction(want)
    return float(a is not None and a == b)


# --- math expressions ----------------------------------------------------------------------------------
def math_match(completion: str, reference: object) -> float:
    """``math-verify``: parses LaTeX/plain answers (boxed or not) and checks symbolic equivalence."""
    try:
        from math_verify import parse, verify
    except ImportError:
        raise MentorError("the math grader needs math-verify: pip install 'mentor[math]'") from None
    answer = _answer_of(reference)
    delimited = re.search(r"(?<!\\)\$", answer) or "\\boxed" in answer  # ``\$18.90`` is a price, not a delimiter
    gold = parse(answer if delimited else f"${answer}$")
    predicted = parse(completion)
    if not gold or not predicted:
        return 0.0
    try:
        return float(verify(gold, predicted))
    except Exception:  # math-verify raises on expressions sympy cannot compare: that is a wrong answer
        return 0.0


# --- code -----------------------------------------------------------------------------------------------
# Run first in the child (the idea of human-eval's reliability_guard): sockets, process spawning and
# file deletion raise, so graded code can neither reach the network nor damage the machine through
# ``import os``. Not a security sandbox against adversarial code; it stops accidents of generated code.
_GUARD = """
import os as _os, shutil as _shutil, socket as _socket, subprocess as _subprocess
def _blocked(*args, **kwargs):
    raise PermissionError("disabled while grading")
for _module, _names in ((_socket, ("socket", "create_connection", "getaddrinfo")),
                        (_os, ("system", "popen", "kill", "killpg", "fork", "forkpty", "remove", "unlink",
                               "rmdir", "removedirs", "rename", "renames", "replace", "truncate", "chmod",
                               "chown", "execv", "execve", "execvp", "spawnv", "putenv")),
                        (_shutil, ("rmtree", "move", "chown")), (_subprocess, ("Popen", "run", "call"))):
    for _name in _names:
        if hasattr(_module, _name):
            setattr(_module, _name, _blocked)
del _os, _shutil, _socket, _subprocess, _blocked, _module, _names, _name
"""
_MEMORY_LIMIT = 2 * 2**30


def _limit_child() -> None:
    """In the child before exec: cap its memory and let the parent kill its whole process group."""
    import resource

    os.setsid()
    resource.setrlimit(resource.RLIMIT_AS, (_MEMORY_LIMIT, _MEMORY_LIMIT))


def extract_code(completion: str) -> str:
    """The first fenced code block of a completion, or the whole completion when there is none."""
    match = re.search(r"```(?:python|py)?\s*\n(.*?)```", completion, flags=re.DOTALL)
    return match.group(1) if match else completion


def run_python(program: str, timeout: float = 5.0) -> tuple[bool, str]:
    """Run ``program`` in a fresh interpreter: isolated mode, empty temp cwd, no network, killed on timeout.

    Returns (exited with status 0, last lines of stderr). A subprocess, not ``exec``, so an infinite loop,
    ``os._exit`` or a segfault in the graded code cannot take the grader down with it; on timeout its
    whole process group is killed.
    """
    with tempfile.TemporaryDirectory(prefix="mentor-grade-") as workdir:
        path = os.path.join(workdir, "program.py")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(_GUARD + "\n" + program)
        env = {
            "PATH": os.environ.get("PATH", ""),
            "PYTHONHASHSEED": "0",
            "HOME": workdir,
            "no_proxy": "*",
            "http_proxy": "http://0.0.0.0:9",
            "https_proxy": "http://0.0.0.0:9",
        }
        child = subprocess.Popen(
            [sys.executable, "-I", path],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_limit_child,
        )
        try:
            _, stderr = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.communicate()
            return False, f"timed out after {timeout:g}s"
        return child.returncode == 0, stderr[-500:]


def code_passes(completion: str, reference: object, timeout: float = 5.0) -> float:
    """HumanEval-style: ``prompt + completion`` defines the function, ``test`` + ``check(entry_point)`` grade it.

    ``reference`` is a dict with ``test`` and optionally ``prompt`` (prepended when the completion is only
    the function body) and ``entry_point``; or the test source itself.
    """
    ref = _meta_of(reference)
    if isinstance(ref, dict):
        code = extract_code(completion)
        prompt = ref.get("prompt", "")
        defines_entry = re.search(rf"^def {re.escape(ref.get('entry_point', ''))}\s*\(", code, re.MULTILINE)
        # a whole function is defined after the prompt (whose imports and helpers it may use); a body completes it
        program = prompt + "\n" + code if ref.get("entry_point") and defines_entry else prompt + code
        program += "\n\n" + ref["test"]
        if ref.get("entry_point"):
            program += f"\n\ncheck({ref['entry_point']})\n"
    else:
        program = extract_code(completion) + "\n\n" + str(reference)
    passed, _ = run_python(program, timeout)
    return float(passed)


def grade_many(grader: Grader, completions: list[str], references: list, workers: int | None = None) -> list[float]:
    """``grader`` over pairs on ``workers`` threads (default: one per core), in order.

    Threads suffice for ``code_passes``: each program runs in its own child process, so HumanEval's 164
    programs take seconds on two cores instead of one after the other.
    """
    if len(completions) != len(references):
        raise ValueError(f"{len(completions)} completions for {len(references)} references")
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(completions) < 2:
        return [grader(c, r) for c, r in zip(completions, references)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(grader, completions, references))


# --- verifiable instructions (IFEval) -------------------------------------------------------------------
def check_instructions(response: str, instruction_ids: list[str], kwargs: list[dict], prompt: str = "") -> list[bool]:
    """One pass/fail per instruction, IFEval's strict mode (``mentor.tasks.ifeval`` has strict and loose)."""
    from mentor.tasks.ifeval import follow_instructions

    return list(follow_instructions(response, instruction_ids, kwargs, prompt).strict)


def ifeval_result(completion: str, reference: object):
    """Strict and loose verdicts per instruction for an IFEval problem (or a dict with its fields)."""
    from mentor.tasks.ifeval import follow_instructions

    ref = _meta_of(reference)
    prompt = getattr(reference, "prompt", None) or ref.get("prompt", "")
    return follow_instructions(completion, ref["instruction_id_list"], ref["kwargs"], prompt)


def instructions_followed(completion: str, reference: object) -> float:
    """1.0 when every instruction holds (IFEval's prompt-level strict accuracy)."""
    return float(all(ifeval_result(completion, reference).strict))


def _answer_of(reference: object) -> str:
    return str(getattr(reference, "answer", reference))


def _meta_of(reference: object):
    """A Problem's ``meta`` (HumanEval's tests, IFEval's instructions), or the reference itself."""
    return reference.meta if hasattr(reference, "meta") and reference.meta else reference


GRADERS: dict[str, Grader] = {
    "exact": exact_match,
    "numeric": numeric_match,
    "math": math_match,
    "code": code_passes,
    "ifeval": instructions_followed,
}


def get_grader(name: str) -> Grader:
    if name not in GRADERS:
        raise MentorError(f"unknown grader {name!r}: choose one of {', '.join(GRADERS)}")
    return GRADERS[name]
