"""Experiment B data: a synthetic "internal documents" corpus and verifiable instruction-following prompts.

Documents state facts about fictional employees (``memo: zorv badge is 482.``); knowledge QA asks for the
fact as a cloze (``memo: zorv badge is`` -> ``482``): the character-level models here are too small to
answer a paraphrased question about a sentence they read, so the question keeps the document's wording.
Instructions are short commands whose answers a rule checks (word counts and keyword frequency through
the IFEval checks of ``mentor.tasks.graders``, exact match for spelling and counting).
"""

from __future__ import annotations

import random
from pathlib import Path

from mentor.evaluation.intervals import wilson_interval
from mentor.tasks.base import Problem
from mentor.tasks.graders import check_instructions, exact_match

ATTRIBUTES = ("badge", "desk")
WORDS = (
    "cat",
    "sun",
    "map",
    "pen",
    "box",
    "cup",
    "owl",
    "fig",
    "jam",
    "kit",
    "log",
    "net",
    "oak",
    "pig",
    "rug",
    "tea",
    "van",
    "web",
    "yak",
    "zip",
    "bee",
    "cow",
    "dog",
    "egg",
    "fox",
    "hat",
    "ink",
    "jet",
    "key",
    "lid",
)


def _names(n: int, rng: random.Random) -> list[str]:
    consonants, vowels = "bdfgklmnprstvz", "aeiou"
    names: set[str] = set()
    while len(names) < n:
        names.add(rng.choice(consonants) + rng.choice(vowels) + rng.choice(consonants) + rng.choice(consonants))
    return sorted(names)


class InternalDocs:
    """``num_people * len(ATTRIBUTES)`` facts; ``documents`` to mid-train on, ``test_problems`` to quiz."""

    name = "internal_qa"

    def __init__(self, num_people: int = 32, seed: int = 7):
        rng = random.Random(seed)
        self.facts = [
            (person, attribute, str(rng.randint(100, 999)))
            for person in _names(num_people, rng)
            for attribute in ATTRIBUTES
        ]

    def documents(self) -> list[tuple[str, str]]:
        """(prompt, completion) pairs: the memo header is the prompt, the loss is on the statement."""
        return [("memo:", f" {p} {a} is {v}.") for p, a, v in self.facts]

    def test_problems(self, n: int | None = None) -> list[Problem]:
        problems = [Problem(prompt=f"memo: {p} {a} is", answer=v) for p, a, v in self.facts]
        return problems[:n] if n else problems

    def grade(self, completion: str, problem: Problem) -> float:
        return exact_match(completion.strip().rstrip(".").split(" ")[0] if completion.strip() else "", problem)


class Instructions:
    """Three verifiable instruction types; train and test prompts come from disjoint seeds."""

    name = "instructions"

    def _problem(self, rng: random.Random) -> Problem:
        kind = rng.randrange(3)
        word = rng.choice(WORDS)
        if kind == 0:
            n = rng.randint(2, 5)
            return Problem(
                f"say {word} {n} times:",
                "",
                " ".join([word] * n),
                meta={
                    "instruction_id_list": ["keywords:frequency", "length_constraints:number_words"],
                    "kwargs": [
                        {"keyword": word, "frequency": n, "relation": "exactly"},
                        {"num_words": n, "relation": "exactly"},
                    ],
                },
            )
        if kind == 1:
            return Problem(f"spell {word} backwards:", word[::-1], word[::-1])
        n = rng.randint(2, 7)
        answer = " ".join(str(i) for i in range(1, n + 1))
        return Problem(f"count to {n}:", answer, answer)

    def train_problems(self, n: int, seed: int) -> list[Problem]:
        rng = random.Random(seed)
        return [self._problem(rng) for _ in range(n)]

    def test_problems(self, n: int) -> list[Problem]:
        return self.train_problems(n, seed=424_242)

    def grade(self, completion: str, problem: Problem) -> float:
        text = completion.strip()
        if problem.meta:
            return float(all(check_instructions(text, problem.meta["instruction_id_list"], problem.meta["kwargs"])))
        return exact_match(text, problem)


# --- Experiment B on tiny models (``mentor bench paper --only B``: the quick path) ------------------------
def experiment_continual(out: Path, scale, quiet: bool) -> dict:
    """A chat model trained here on verifiable instructions -> mid-trained on synthetic internal documents
    (100% docs, and 70/30 docs/chat) -> OPD self-distillation with the chat model as teacher. Knowledge QA
    and instruction following at each stage, with Wilson 95% intervals; ``scale`` is ``PaperScale``."""
    from mentor.config import DistillConfig
    from mentor.data.prompts import EncodedExample
    from mentor.evaluation.accuracy import evaluate
    from mentor.models.loading import load_model
    from mentor.models.tiny import build_char_tokenizer, build_tiny_model, save_tiny, tiny_config
    from mentor.recipes.demo import DEMO_OPD_LR, STUDENT_ARCH
    from mentor.recipes.distill import run_distill
    from mentor.train.progress import console

    console.rule("B: continual learning. chat model -> mid-train on documents -> OPD self-distillation")
    out = out / "B"
    tokenizer = build_char_tokenizer()
    docs, instructions = InternalDocs(scale.people), Instructions()
    chat = _encode(tokenizer, [(p.prompt, p.solution, p) for p in instructions.train_problems(20_000, seed=1)])
    documents = _encode(tokenizer, [(prompt, text, None) for prompt, text in docs.documents()])
    arch = dict(STUDENT_ARCH)  # the demo student's size: B is about forgetting, not capacity
    init = save_tiny(
        build_tiny_model(
            tiny_config(arch.pop("arch"), len(tokenizer), tokenizer=tokenizer, max_positions=64, **arch), seed=5
        ),
        tokenizer,
        out / "init",
    )
    sft = dict(
        batch_size=64,
        group_size=1,
        learning_rate=2e-3,
        adam_beta2=0.99,
        warmup_steps=20,
        max_new_tokens=16,
        overwrite=True,
        quiet=quiet,
        model="",
    )
    base = _sft_stage(out / "chat", init, chat, scale.chat_sft_steps, sft)
    mixed = _mix(documents, chat, 0.7, seed=0)
    mid_100 = _sft_stage(out / "mid_100", base, documents, scale.midtrain_steps, dict(sft, learning_rate=1e-3))
    mid_70 = _sft_stage(out / "mid_70", base, mixed, scale.midtrain_steps, dict(sft, learning_rate=1e-3))
    prompts = [
        EncodedExample(tokenizer(p.prompt)["input_ids"], None, p.prompt, p)
        for p in instructions.train_problems(2_000, seed=2)
    ]
    # the prompts come from Python (examples=), so the start-up check, which reads --prompts, is off
    config = DistillConfig(
        student=str(mid_70),
        teacher=str(base),
        prompts="(built in)",
        check=False,
        output_dir=str(out / "opd"),
        steps=scale.self_distill_steps,
        batch_size=16,
        group_size=4,
        max_new_tokens=16,
        learning_rate=2 * DEMO_OPD_LR,
        overwrite=True,
        quiet=quiet,
    )
    trainer, _ = run_distill(config, examples=prompts)
    stages = {
        "chat model (base)": base,
        "+ midtrain, 100% docs": mid_100,
        "+ midtrain, 70% docs / 30% chat": mid_70,
        "+ midtrain (70%) + OPD self-distillation": trainer.run.path / "final",
    }
    rows = {}
    for label, path in stages.items():
        model = load_model(str(path))
        qa = evaluate(model, tokenizer, docs, docs.test_problems(), 8)
        following = evaluate(model, tokenizer, instructions, instructions.test_problems(scale.eval_size), 16)
        rows[label] = {
            "internal_qa": qa.accuracy,
            "instructions": following.accuracy,
            "internal_qa_ci": wilson_interval(sum(qa.correct), len(qa.correct)),
            "instructions_ci": wilson_interval(sum(following.correct), len(following.correct)),
        }
    return {"rows": rows, "facts": len(docs.facts), "instruction_problems": scale.eval_size}


def continual_table(b: dict) -> tuple[str, list[str], list[list[str]]]:
    """(title, headers, rows) of the tiny Experiment B, each accuracy with its Wilson 95% interval."""

    def cell(v: dict, key: str) -> str:
        low, high = v.get(f"{key}_ci", (v[key], v[key]))
        return f"{v[key]:.1%} [{low:.1%}, {high:.1%}]"

    rows = [[label, cell(v, "internal_qa"), cell(v, "instructions")] for label, v in b["rows"].items()]
    return (
        "Experiment B: continual learning (tiny models; 95% Wilson intervals)",
        ["model", f"internal QA ({b['facts']} facts)" if "facts" in b else "internal QA", "instruction following"],
        rows,
    )


def plot_continual(rows: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(8, 4))
    labels = list(rows)
    width = 0.38
    for offset, (key, name) in zip(
        (-width / 2, width / 2), (("internal_qa", "internal QA"), ("instructions", "instruction following"))
    ):
        values = [rows[label][key] for label in labels]
        intervals = [rows[label].get(f"{key}_ci", (rows[label][key],) * 2) for label in labels]
        errors = [[v - ci[0] for v, ci in zip(values, intervals)], [ci[1] - v for v, ci in zip(values, intervals)]]
        axis.bar([i + offset for i in range(len(labels))], values, width, yerr=errors, capsize=3, label=name)
    axis.set_xticks(
        range(len(labels)), [label.replace(", ", ",\n").replace(" + OPD", "\n+ OPD") for label in labels], fontsize=8
    )
    axis.set(
        ylabel="accuracy (95% interval)", ylim=(0, 1.05), title="B: knowledge vs behaviour through continual learning"
    )
    axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _encode(tokenizer, items) -> list:
    from mentor.data.prompts import EncodedExample, encode_completion

    return [
        EncodedExample(tokenizer(prompt)["input_ids"], encode_completion(tokenizer, completion), prompt, ref)
        for prompt, completion, ref in items
    ]


def _mix(documents: list, chat: list, docs_share: float, seed: int) -> list:
    """Every document plus enough chat examples that documents make ``docs_share`` of the data."""
    n_chat = round(len(documents) * (1 - docs_share) / docs_share)
    return documents + random.Random(seed).sample(chat, n_chat)


def _sft_stage(out: Path, model: Path, examples: list, steps: int, options: dict) -> Path:
    from mentor.config import SFTConfig
    from mentor.recipes.sft import run_sft

    options = dict(options, model=str(model), data="(built in)", warmup_steps=min(options["warmup_steps"], steps))
    config = SFTConfig(**options, output_dir=str(out), steps=steps)
    trainer, _ = run_sft(config, examples=examples)
    return trainer.run.path / "final"
