"""Graders: ``completion -> reward in [0, 1]`` against a reference, for evaluation and for RL rewards.

- ``exact_match``: whitespace- and case-normalised string equality.
- ``numeric_match``: the final number of the completion (GSM8K's ``#### 42``, ``\\boxed{42}``, or the last
  number written) equals the reference number.
- ``math_match``: symbolic equivalence through ``math-verify`` (``\\frac{1}{2}`` == ``0.5``), for MATH.
- ``code_passes``: the completion's Python, followed by the reference tests, runs in a separate process
  with a timeout, no network and an empty working directory (HumanEval).
- ``instructions_followed``: IFEval-style verifiable constraints (word counts, keywords, formats).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from fractions import Fraction
from typing import Callable

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
    for pattern in (rf"####\s*\$?\s*({_NUMBER})", rf"\\boxed\{{\s*({_NUMBER})\s*\}}",
                    rf"answer is\s*:?\s*\$?\s*({_NUMBER})"):
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
    gold = parse(answer if "$" in answer or "\\boxed" in answer else f"${answer}$")
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
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONHASHSEED": "0", "HOME": workdir,
               "no_proxy": "*", "http_proxy": "http://0.0.0.0:9", "https_proxy": "http://0.0.0.0:9"}
        child = subprocess.Popen([sys.executable, "-I", path], cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                 preexec_fn=_limit_child)
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
    ref = reference.meta if hasattr(reference, "meta") and reference.meta else reference
    if isinstance(ref, dict):
        code = extract_code(completion)
        prompt = ref.get("prompt", "")
        defines_entry = re.search(rf"^def {re.escape(ref.get('entry_point', ''))}\s*\(", code, re.MULTILINE)
        program = code if ref.get("entry_point") and defines_entry else prompt + code  # else: only the body
        program += "\n\n" + ref["test"]
        if ref.get("entry_point"):
            program += f"\n\ncheck({ref['entry_point']})\n"
    else:
        program = extract_code(completion) + "\n\n" + str(reference)
    passed, _ = run_python(program, timeout)
    return float(passed)


# --- verifiable instructions (IFEval style) ----------------------------------------------------------
def _words(text: str) -> int:
    return len(re.findall(r"\b\w+\b", text))


def _check_json(text: str, _kw: dict) -> bool:
    body = re.sub(r"^```(?:json)?\s*|\s*```$", "", text.strip())
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


_COMPARE = {"at least": lambda n, k: n >= k, "less than": lambda n, k: n < k, "at most": lambda n, k: n <= k,
            "exactly": lambda n, k: n == k}


def _relation(kw: dict) -> Callable[[int, int], bool]:
    return _COMPARE[kw.get("relation", "at least")]


# IFEval's instruction ids (a practical subset) -> check(response, kwargs)
INSTRUCTION_CHECKS: dict[str, Callable[[str, dict], bool]] = {
    "length_constraints:number_words": lambda t, kw: _relation(kw)(_words(t), kw["num_words"]),
    "length_constraints:number_sentences": lambda t, kw: _relation(kw)(
        len([s for s in re.split(r"[.!?]+", t) if s.strip()]), kw["num_sentences"]),
    "length_constraints:number_paragraphs": lambda t, kw: len([p for p in t.split("***") if p.strip()])
    == kw["num_paragraphs"],
    "keywords:existence": lambda t, kw: all(re.search(rf"\b{re.escape(k)}\b", t, re.IGNORECASE)
                                            for k in kw["keywords"]),
    "keywords:forbidden_words": lambda t, kw: not any(re.search(rf"\b{re.escape(k)}\b", t, re.IGNORECASE)
                                                      for k in kw["forbidden_words"]),
    "keywords:frequency": lambda t, kw: _relation(kw)(len(re.findall(rf"\b{re.escape(kw['keyword'])}\b", t,
                                                                     re.IGNORECASE)), kw["frequency"]),
    "keywords:letter_frequency": lambda t, kw: _relation(kw)(t.lower().count(kw["letter"].lower()),
                                                             kw["let_frequency"]),
    "change_case:english_lowercase": lambda t, kw: t == t.lower() and any(c.isalpha() for c in t),
    "change_case:english_capital": lambda t, kw: t == t.upper() and any(c.isalpha() for c in t),
    "detectable_format:json_format": _check_json,
    "detectable_format:number_bullet_lists": lambda t, kw: len(re.findall(r"^\s*[*-]\s", t, re.MULTILINE))
    == kw["num_bullets"],
    "detectable_format:title": lambda t, kw: re.search(r"<<[^\n]+>>", t) is not None,
    "detectable_content:postscript": lambda t, kw: re.search(rf"^\s*{re.escape(kw.get('postscript_marker', 'P.S.'))}",
                                                             t, re.MULTILINE) is not None,
    "startend:end_checker": lambda t, kw: t.strip().endswith(kw["end_phrase"]),
    "startend:quotation": lambda t, kw: len(t.strip()) > 1 and t.strip()[0] == t.strip()[-1] == '"',
    "punctuation:no_comma": lambda t, kw: "," not in t,
}


def check_instructions(response: str, instruction_ids: list[str], kwargs: list[dict]) -> list[bool]:
    """One pass/fail per instruction (IFEval's strict mode)."""
    out = []
    for name, kw in zip(instruction_ids, kwargs):
        if name not in INSTRUCTION_CHECKS:
            raise MentorError(f"unknown instruction {name!r}: known ones are {', '.join(sorted(INSTRUCTION_CHECKS))}")
        out.append(bool(INSTRUCTION_CHECKS[name](response, {k: v for k, v in (kw or {}).items() if v is not None})))
    return out


def instructions_followed(completion: str, reference: object) -> float:
    """1.0 when every instruction holds (IFEval's prompt-level strict accuracy)."""
    ref = reference.meta if hasattr(reference, "meta") and reference.meta else reference
    results = check_instructions(completion, ref["instruction_id_list"], ref["kwargs"])
    return float(all(results))


def _answer_of(reference: object) -> str:
    return str(getattr(reference, "answer", reference))


GRADERS: dict[str, Grader] = {"exact": exact_match, "numeric": numeric_match, "math": math_match,
                              "code": code_passes, "ifeval": instructions_followed}


def get_grader(name: str) -> Grader:
    if name not in GRADERS:
        raise MentorError(f"unknown grader {name!r}: choose one of {', '.join(GRADERS)}")
    return GRADERS[name]
