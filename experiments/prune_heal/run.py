"""A2 "prune and heal" on SmolLM2-135M-Instruct (issue 20): SFT on teacher samples at n0/2n0/4n0, forward-KL
logit distillation, OPD (sampled, top-k) from SFT-n0; measured against the full model on held-out prompts.

The protocol is ``protocol.md`` beside this file, fixed before the first full run. Each stage writes its
output under ``--out`` as it finishes; running the same command again skips finished stages and resumes an
interrupted training run from its last checkpoint.

    nice -n 10 .venv/bin/python -m experiments.prune_heal.run --out runs/prune_heal          # ~45 min
    nice -n 10 .venv/bin/python -m experiments.prune_heal.run --quick --out runs/prune_heal_q  # a few minutes
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from experiments.continual.chat_prompts import REQUESTS, TOPICS
from experiments.continual.run import REAL_MODEL, ifeval_subset, resolve_inputs
from mentor.evaluation.intervals import percentile_interval, wilson_interval

HERE = Path(__file__).resolve().parent
BOOTSTRAP = dict(replicates=2000, seed=0)
DROP = [3, 13, 14, 15, 16, 17]  # the prune pilot's choice (bi-6), experiments/prune_pilot/results.md
FACTS = [  # (question, accepted words): only those the teacher answers are kept (protocol)
    ("What is the capital of France?", ("paris",)),
    ("What is the capital of Japan?", ("tokyo",)),
    ("What is the capital of Italy?", ("rome",)),
    ("What is the capital of Germany?", ("berlin",)),
    ("What is the capital of Spain?", ("madrid",)),
    ("What is the capital of the United Kingdom?", ("london",)),
    ("What is the capital of Egypt?", ("cairo",)),
    ("What is the capital of Russia?", ("moscow",)),
    ("How many legs does a spider have?", ("8", "eight")),
    ("How many legs does an insect have?", ("6", "six")),
    ("How many days are there in a week?", ("7", "seven")),
    ("How many continents are there on Earth?", ("7", "seven")),
    ("How many hours are there in a day?", ("24", "twenty-four")),
    ("Who wrote Romeo and Juliet?", ("shakespeare",)),
    ("Who painted the Mona Lisa?", ("leonardo", "da vinci")),
    ("Who developed the theory of relativity?", ("einstein",)),
    ("Who was the first president of the United States?", ("washington",)),
    ("What is the largest planet in our solar system?", ("jupiter",)),
    ("Which planet is known as the Red Planet?", ("mars",)),
    ("What is the closest star to Earth?", ("sun",)),
    ("At what temperature in degrees Celsius does water boil at sea level?", ("100",)),
    ("At what temperature in degrees Celsius does water freeze?", ("0", "zero")),
    ("What color is the sky on a clear day?", ("blue",)),
    ("What color are most plant leaves?", ("green",)),
    ("What gas do plants absorb from the air for photosynthesis?", ("carbon dioxide", "co2")),
    ("What gas do humans need to breathe to survive?", ("oxygen",)),
    ("What is the chemical symbol for water?", ("h2o",)),
    ("What is the chemical symbol for gold?", ("au",)),
    ("What is the largest ocean on Earth?", ("pacific",)),
    ("What is the longest river in Africa?", ("nile",)),
    ("What is the tallest mountain in the world?", ("everest",)),
    ("What is the largest mammal in the world?", ("blue whale", "whale")),
    ("What is the freezing point of water in degrees Fahrenheit?", ("32",)),
    ("What language is mainly spoken in Brazil?", ("portuguese",)),
    ("What is the main language spoken in Mexico?", ("spanish",)),
    ("Which organ pumps blood through the human body?", ("heart",)),
    ("How many sides does a triangle have?", ("3", "three")),
    ("What is 12 times 12?", ("144",)),
    ("What is the square root of 81?", ("9", "nine")),
    ("In which country are the pyramids of Giza?", ("egypt",)),
]


@dataclass(frozen=True)
class Scale:
    n0: int = 96  # sequences
    batch: int = 8  # sequences per optimizer step, every arm
    learning_rate: float = 5e-5
    warmup: int = 2
    new_tokens: int = 96
    fact_tokens: int = 32
    eval_prompts: int = 32
    ifeval_prompts: int = 48
    facts: int = len(FACTS)
    top_k: int = 20
    eval_batch: int = 32


FULL = Scale()
QUICK = Scale(n0=8, batch=4, new_tokens=24, fact_tokens=16, eval_prompts=6, ifeval_prompts=6, facts=6, eval_batch=8)
ARMS = (
    "teacher",
    "start",
    "sft_n0",
    "sft_2n0",
    "sft_4n0",
    "forward_kl_n0",
    "opd_sampled",
    "opd_top_k",
    "opd_one_prompt",
)
LABELS = {
    "teacher": "teacher (30 layers)",
    "start": "pruned start (24 layers)",
    "sft_n0": "SFT n0",
    "sft_2n0": "SFT 2n0",
    "sft_4n0": "SFT 4n0",
    "forward_kl_n0": "forward-KL logit distillation n0",
    "opd_sampled": "SFT n0 + OPD sampled",
    "opd_top_k": "SFT n0 + OPD top-k",
    "opd_one_prompt": "SFT n0 + OPD sampled, one prompt (C)",
}


# --- prompts -------------------------------------------------------------------------------------------------
def prompt_splits(scale: Scale) -> dict[str, list[str]]:
    """Held-out topics (none in training), evaluation prompts on them, training prompts on the others."""
    held_topics = set(random.Random(20).sample(list(TOPICS), 8))
    held = [r.format(topic=t) for t in TOPICS if t in held_topics for r in REQUESTS]
    train = [r.format(topic=t) for t in TOPICS if t not in held_topics for r in REQUESTS]
    train = random.Random(22).sample(train, 5 * scale.n0)
    return {
        "held_out_topics": sorted(held_topics),
        "evaluation": random.Random(21).sample(held, scale.eval_prompts),
        "sft": train[: 4 * scale.n0],
        "opd": train[4 * scale.n0 :],
    }


def encode(tokenizer, texts: list[str]) -> list[list[int]]:
    from mentor.data.prompts import Example, encode_prompt

    return [encode_prompt(tokenizer, Example(prompt=t), True) for t in texts]


# --- measurements ---------------------------------------------------------------------------------------------
def greedy(model, tokenizer, prompt_ids: list[list[int]], new_tokens: int, batch: int) -> list[list[int]]:
    from mentor.sample.hf import HFSampler

    return (
        HFSampler(model.eval(), tokenizer, new_tokens, batch_size=batch).sample(prompt_ids, greedy=True).completion_ids
    )


@torch.no_grad()
def per_token_kls(student, teacher, prompt_ids, completions, direction: str) -> list[list[float]]:
    """Per completion token, the full-vocabulary KL(student || teacher) ("reverse") or KL(teacher || student)
    ("forward") of the next-token distributions after the same prefix; one list per prompt."""
    out = []
    for prompt, completion in zip(prompt_ids, completions):
        if not completion:
            out.append([])
            continue
        ids = torch.tensor([prompt + completion])
        at = slice(len(prompt) - 1, len(prompt) + len(completion) - 1)
        q = torch.log_softmax(student(ids, use_cache=False).logits[0, at].float(), -1)
        p = torch.log_softmax(teacher(ids, use_cache=False).logits[0, at].float(), -1)
        kl = (q.exp() * (q - p)).sum(-1) if direction == "reverse" else (p.exp() * (p - q)).sum(-1)
        out.append(kl.tolist())
    return out


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 over lower-cased words (longest common subsequence)."""
    a, b = re.findall(r"\w+", candidate.lower()), re.findall(r"\w+", reference.lower())
    if not a or not b:
        return float(a == b)
    previous = [0] * (len(b) + 1)
    for x in a:
        row = [0]
        for j, y in enumerate(b):
            row.append(previous[j] + 1 if x == y else max(previous[j + 1], row[j]))
        previous = row
    lcs = previous[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(a), lcs / len(b)
    return 2 * precision * recall / (precision + recall)


def answers_fact(text: str, words: tuple[str, ...]) -> bool:
    return any(re.search(rf"(?<!\w){re.escape(w)}(?!\w)", text.lower()) for w in words)


def pooled(per_prompt: list[list[float]]) -> dict:
    """Token-pooled mean with a percentile bootstrap over prompts."""
    sums = np.array([sum(v) for v in per_prompt])
    counts = np.array([len(v) for v in per_prompt])
    rng = np.random.default_rng(BOOTSTRAP["seed"])
    picks = rng.integers(0, len(per_prompt), size=(BOOTSTRAP["replicates"], len(per_prompt)))
    value = float(sums.sum() / max(counts.sum(), 1))
    return {"value": value, "ci": percentile_interval(sums[picks].sum(1) / np.maximum(counts[picks].sum(1), 1))}


def mean_interval(values: list[float]) -> dict:
    v = np.array(values, dtype=float)
    rng = np.random.default_rng(BOOTSTRAP["seed"])
    picks = rng.integers(0, len(v), size=(BOOTSTRAP["replicates"], len(v)))
    return {"value": float(v.mean()), "ci": percentile_interval(v[picks].mean(1))}


def share(flags: list[bool]) -> dict:
    return {"value": sum(flags) / max(len(flags), 1), "ci": wilson_interval(sum(flags), len(flags)), "n": len(flags)}


class Evaluation:
    """Everything measured on one model, against the teacher's answers (computed once, first)."""

    def __init__(self, tokenizer, teacher, scale: Scale, prompts: list[str], ifeval: list):
        self.tokenizer, self.teacher, self.scale = tokenizer, teacher, scale
        self.prompt_ids = encode(tokenizer, prompts)
        self.ifeval = ifeval
        self.ifeval_ids = encode(tokenizer, [p.prompt for p in ifeval])
        self.fact_ids = encode(tokenizer, [q for q, _ in FACTS[: scale.facts]])
        self.reference: dict | None = None

    def answers(self, model) -> dict:
        s = self.scale
        return {
            "chat": greedy(model, self.tokenizer, self.prompt_ids, s.new_tokens, s.eval_batch),
            "facts": greedy(model, self.tokenizer, self.fact_ids, s.fact_tokens, s.eval_batch),
            "ifeval": greedy(model, self.tokenizer, self.ifeval_ids, s.new_tokens, s.eval_batch),
        }

    def measure(self, model, is_teacher: bool = False) -> dict:
        from mentor.tasks.ifeval import follow_instructions

        decode = lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
        answers = self.answers(model)
        chat = [decode(c) for c in answers["chat"]]
        facts = [decode(c) for c in answers["facts"]]
        replies = [decode(c) for c in answers["ifeval"]]
        if is_teacher:
            self.reference = {"answers": answers, "chat": chat, "facts_ok": self._facts_ok(facts)}
        reference = self.reference
        assert reference is not None, "the teacher is measured first"
        kept = [i for i, ok in enumerate(reference["facts_ok"]) if ok]
        checked = [
            follow_instructions(r, p.meta["instruction_id_list"], p.meta["kwargs"], p.prompt)
            for r, p in zip(replies, self.ifeval)
        ]
        followed = np.array([sum(c.loose) for c in checked])
        counts = np.array([len(c.loose) for c in checked])
        rng = np.random.default_rng(BOOTSTRAP["seed"])
        picks = rng.integers(0, len(counts), size=(BOOTSTRAP["replicates"], len(counts)))
        agreement = [rouge_l(c, r) for c, r in zip(chat, reference["chat"])]
        answered = self._facts_ok(facts)
        facts_ok = [answered[i] for i in kept]
        row = {
            "agreement": mean_interval(agreement),
            "facts": share(facts_ok),
            "ifeval_prompt_strict": share([all(c.strict) for c in checked]),
            "ifeval_instruction_loose": {
                "value": float(followed.sum() / counts.sum()),
                "ci": percentile_interval(followed[picks].sum(1) / counts[picks].sum(1)),
            },
            "eos_rate": float(np.mean([not cut for cut in self._cut(answers["chat"])])),
            "mean_length": float(np.mean([len(c) for c in answers["chat"]])),
            "examples": {"chat": chat[:3], "facts": facts[:4]},
            "per_item": {"agreement": agreement, "facts": [float(ok) for ok in facts_ok]},
        }
        if is_teacher:
            row["reverse_kl"] = row["forward_kl"] = {"value": 0.0, "ci": (0.0, 0.0)}
        else:
            row["reverse_kl"] = pooled(per_token_kls(model, self.teacher, self.prompt_ids, answers["chat"], "reverse"))
            row["forward_kl"] = pooled(
                per_token_kls(model, self.teacher, self.prompt_ids, reference["answers"]["chat"], "forward")
            )
        return row

    def _facts_ok(self, facts: list[str]) -> list[bool]:
        return [answers_fact(t, words) for t, (_, words) in zip(facts, FACTS)]

    def _cut(self, completions: list[list[int]]) -> list[bool]:
        from mentor.models.chat import stop_token_ids

        stops = set(stop_token_ids(self.tokenizer, self.teacher))
        return [not c or c[-1] not in stops for c in completions]


# --- training arms --------------------------------------------------------------------------------------------
def common(scale: Scale, out: Path, quiet: bool) -> dict:
    return dict(
        output_dir=str(out),
        batch_size=scale.batch,
        group_size=1,
        learning_rate=scale.learning_rate,
        lr_schedule="constant",
        warmup_steps=scale.warmup,
        max_new_tokens=scale.new_tokens,
        seed=0,
        quiet=quiet,
    )


def run_sft_arm(out: Path, start: Path, teacher: Path, prompts_file: Path, scale: Scale, quiet: bool, **extra) -> None:
    from mentor.config import SFTConfig
    from mentor.recipes.sft import run_sft

    steps_n0 = scale.n0 // scale.batch
    config = SFTConfig(
        model=str(start),
        from_teacher=str(teacher),
        data=str(prompts_file),
        chat_template=True,
        teacher_temperature=1.0,
        save_every=steps_n0,
        keep_checkpoints=8,
        **common(scale, out, quiet),
        **extra,
    )
    run_sft(config)


def run_forward_kl_arm(out: Path, start: Path, teacher: Path, sft_dir: Path, scale: Scale, quiet: bool) -> None:
    """The SFT run's cached teacher samples, in the same order (same seed), the forward KL as the loss."""
    from mentor.config import SFTConfig
    from mentor.data.prompts import EncodedExample
    from mentor.recipes.sft import TEACHER_CACHE, run_sft

    lines = (sft_dir / TEACHER_CACHE).read_text().splitlines()[1:]
    records = [json.loads(line) for line in lines]
    examples = [EncodedExample(r["prompt_ids"], r["completion_ids"], r["prompt"]) for r in records]
    config = SFTConfig(
        model=str(start),
        from_teacher=str(teacher),
        data="(the SFT run's teacher samples)",
        sft_loss="forward_kl",
        steps=scale.n0 // scale.batch,
        **common(scale, out, quiet),
    )
    run_sft(config, examples=examples)


def run_opd_arm(
    out: Path,
    start: Path,
    sft_n0: Path,
    teacher: Path,
    tokenizer,
    prompts: list[str],
    divergence: str,
    scale: Scale,
    quiet: bool,
    one_prompt: bool = False,
) -> None:
    """OPD from SFT-n0: ``batch`` prompts x 1 sample per step, or (``one_prompt``, experiment C) the first prompt
    ``batch`` times per step, the same number of sequences."""
    from mentor.config import DistillConfig
    from mentor.data.prompts import EncodedExample
    from mentor.models.loading import load_model
    from mentor.recipes.distill import run_distill
    from mentor.train.run_dir import load_weights

    student = load_model(str(start))
    load_weights(student, sft_n0)
    prompts = prompts[:1] if one_prompt else prompts
    examples = [EncodedExample(ids, None, text) for ids, text in zip(encode(tokenizer, prompts), prompts)]
    shape = dict(batch_size=1, group_size=scale.batch) if one_prompt else {}
    config = DistillConfig(
        student=str(start),
        teacher=str(teacher),
        prompts="(built in)",
        check=False,  # the prompts come from Python; the start-up check reads --prompts
        divergence=divergence,
        **({"kl_top_k": scale.top_k} if divergence == "top_k" else {}),
        temperature=1.0,
        steps=scale.n0 // scale.batch,
        **(common(scale, out, quiet) | shape),
    )
    run_distill(config, student=student, tokenizer=tokenizer, examples=examples)


# --- the experiment -------------------------------------------------------------------------------------------
@contextlib.contextmanager
def timed(timings: dict, stage: str):
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    timings[stage] = {
        "wall_minutes": (time.perf_counter() - wall) / 60,
        "cpu_minutes": (time.process_time() - cpu) / 60,
    }


def done(path: Path) -> bool:
    return (path / "final").exists()


def run(out: Path, quick: bool, quiet: bool = True, model: str | None = None, ifeval: str | None = None) -> dict:
    from mentor.models.loading import load_model, load_tokenizer
    from mentor.models.prune import prune
    from mentor.recipes.common import quiet_transformers
    from mentor.train.run_dir import load_weights

    quiet_transformers()
    scale = QUICK if quick else FULL
    gguf, ifeval_path = resolve_inputs(model, ifeval)
    out.mkdir(parents=True, exist_ok=True)
    state_file = out / "state.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {"timings": {}, "rows": {}}
    timings, rows = state["timings"], state["rows"]

    def save_state() -> None:
        state_file.write_text(json.dumps(state, indent=1))

    splits = prompt_splits(scale)
    start = out / "start"
    if not (start / "mentor_prune.json").exists():
        with timed(timings, "prune"):
            prune(str(gguf), start, drop=DROP, log=lambda *_: None)
    tokenizer = load_tokenizer(str(start))
    prompts_file = out / "sft_prompts.jsonl"
    prompts_file.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in splits["sft"]))

    if not done(out / "sft"):
        with timed(timings, "sft (teacher samples + 4n0)"):
            run_sft_arm(out / "sft", start, gguf, prompts_file, scale, quiet, steps=4 * scale.n0 // scale.batch)
        save_state()
    steps_n0 = scale.n0 // scale.batch
    checkpoint = lambda step: out / "sft" / "checkpoints" / f"step_{step:08d}" / "model"  # noqa: E731
    if not done(out / "forward_kl"):
        with timed(timings, "forward KL n0"):
            run_forward_kl_arm(out / "forward_kl", start, gguf, out / "sft", scale, quiet)
        save_state()
    for arm, divergence in (("opd_sampled", "sampled"), ("opd_top_k", "top_k"), ("opd_one_prompt", "sampled")):
        if not done(out / arm):
            with timed(timings, arm):
                run_opd_arm(
                    out / arm,
                    start,
                    checkpoint(steps_n0),
                    gguf,
                    tokenizer,
                    splits["opd"],
                    divergence,
                    scale,
                    quiet,
                    one_prompt=arm == "opd_one_prompt",
                )
            save_state()

    if all(arm in rows for arm in ARMS):
        return finish(out, quick, scale, gguf, splits, rows, timings)
    teacher = load_model(str(gguf)).eval()
    evaluation = Evaluation(
        tokenizer, teacher, scale, splits["evaluation"], ifeval_subset(ifeval_path, scale.ifeval_prompts)
    )
    with timed(timings, "evaluate teacher"):  # always first: the others are measured against its answers
        rows["teacher"] = evaluation.measure(teacher, is_teacher=True)
    weights = {
        "start": None,
        "sft_n0": checkpoint(steps_n0),
        "sft_2n0": checkpoint(2 * steps_n0),
        "sft_4n0": checkpoint(4 * steps_n0),
        "forward_kl_n0": out / "forward_kl" / "final",
        "opd_sampled": out / "opd_sampled" / "final",
        "opd_top_k": out / "opd_top_k" / "final",
        "opd_one_prompt": out / "opd_one_prompt" / "final",
    }
    for arm, path in weights.items():
        if arm in rows:
            continue
        with timed(timings, f"evaluate {arm}"):
            if path is None or path.name == "model":
                model = load_model(str(start))
                if path is not None:
                    load_weights(model, path)
            else:
                model = load_model(str(path))
            rows[arm] = evaluation.measure(model.eval())
        save_state()
    return finish(out, quick, scale, gguf, splits, rows, timings)


def finish(out: Path, quick: bool, scale: Scale, gguf: Path, splits: dict, rows: dict, timings: dict) -> dict:
    """The costs, fits and paired differences of the measured rows: ``results.json``, ``results.md`` and the plot."""
    result = {
        "protocol": "experiments/prune_heal/protocol.md (v1)",
        "quick": quick,
        "scale": asdict(scale),
        "model": str(gguf),
        "dropped": DROP,
        "splits": {k: v for k, v in splits.items() if k in ("held_out_topics", "evaluation")}
        | {"one_prompt": splits["opd"][0]},
        "facts_kept": rows["teacher"]["facts"]["n"],
        "rows": rows,
        "costs": costs(out, scale),
        "timings": timings,
    }
    from experiments.prune_heal.report import analyse, paired, write_report

    result["fits"] = analyse(result)
    result["paired"] = paired(result)
    (out / "results.json").write_text(json.dumps(result, indent=1))
    write_report(result, out)
    return result


def costs(out: Path, scale: Scale) -> dict:
    """Each arm's FLOPs from its ledger: student (train + sample) and teacher (sample + score). SFT at k x n0
    is the first k x n0 / batch steps of the one SFT run, its teacher sampling the samples trained so far."""

    def records(run: Path) -> list[dict]:
        return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]

    def step_rows(run: Path) -> list[dict]:
        return [r for r in records(run) if "flops_student_train" in r and "step" in r]

    sft = step_rows(out / "sft")
    cache = (out / "sft" / "teacher_samples.jsonl").read_text().splitlines()
    teacher_params = json.loads(cache[0])["teacher_params"]
    steps_n0 = scale.n0 // scale.batch
    result = {}
    for k, name in ((1, "sft_n0"), (2, "sft_2n0"), (4, "sft_4n0")):
        upto = [r for r in sft if r["step"] <= k * steps_n0]
        tokens = sum(r["tokens"] for r in upto)
        result[name] = {"student": upto[-1]["flops_student_train"], "teacher": 2.0 * teacher_params * tokens}
    fkl = step_rows(out / "forward_kl")
    fkl_tokens = sum(r["tokens"] for r in fkl)
    result["forward_kl_n0"] = {
        "student": fkl[-1]["flops_student_train"],
        "teacher": 2.0 * teacher_params * fkl_tokens + fkl[-1].get("flops_teacher_score", 0.0),
    }
    for arm in ("opd_sampled", "opd_top_k", "opd_one_prompt"):
        last = step_rows(out / arm)[-1]
        own = {
            "student": last["flops_student_train"] + last.get("flops_student_sample", 0.0),
            "teacher": last.get("flops_teacher_score", 0.0),
        }
        result[arm] = {
            "own": own,
            "student": result["sft_n0"]["student"] + own["student"],
            "teacher": result["sft_n0"]["teacher"] + own["teacher"],
        }
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/prune_heal")
    parser.add_argument("--quick", action="store_true", help="the same protocol at smaller sizes (a few minutes)")
    parser.add_argument("--model", default=None, help=f"the SmolLM2-135M-Instruct GGUF (default: {REAL_MODEL})")
    parser.add_argument("--ifeval", default=None, help="IFEval's input_data.jsonl")
    parser.add_argument("--verbose", action="store_true", help="show each training run's progress")
    args = parser.parse_args(argv)
    result = run(Path(args.out), args.quick, quiet=not args.verbose, model=args.model, ifeval=args.ifeval)
    print(
        f"wrote {Path(args.out) / 'results.md'} ({sum(t['wall_minutes'] for t in result['timings'].values()):.1f} min)"
    )


if __name__ == "__main__":
    main()
