"""A1 task pilot (issue 20): which verifiable task is SmolLM2-135M-Instruct partly competent at?

The protocol (candidates, measurement, choice rule) is ``pilot_protocol.md`` beside this file, fixed before the
first run. Writes ``pilot_results.json`` and ``pilot_results.md`` beside itself (or in ``--out``).

    nice -n 10 .venv/bin/python -m experiments.rl_vs_opd.pilot
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SUFFIX = " Answer with the number only."
GSM8K_SUFFIX = " Give the final answer as a number."
NEW_TOKENS = 48
RANGE = (0.20, 0.70)
TARGET = 0.45


def arithmetic(kind: str, n: int, seed: int) -> list[dict]:
    """``n`` problems of one candidate task: ``{"prompt", "answer"}``."""
    rng = random.Random(seed)
    rows = []
    while len(rows) < n:
        if kind == "add2":
            a, b = rng.randint(10, 99), rng.randint(10, 99)
            expression, answer = f"{a} + {b}", a + b
        elif kind == "sub2":
            b = rng.randint(10, 98)
            a = rng.randint(b + 1, 99)
            expression, answer = f"{a} - {b}", a - b
        elif kind == "mul1":
            a, b = rng.randint(10, 99), rng.randint(2, 9)
            expression, answer = f"{a} * {b}", a * b
        elif kind == "add3":
            a, b, c = (rng.randint(10, 99) for _ in range(3))
            expression, answer = f"{a} + {b} + {c}", a + b + c
        else:
            raise ValueError(kind)
        rows.append({"prompt": f"What is {expression}?{SUFFIX}", "answer": str(answer)})
    return rows


def gsm8k(n: int, shared: Path) -> list[dict]:
    lines = (shared / "data/gsm8k/train.jsonl").read_text().splitlines()[:n]
    rows = [json.loads(line) for line in lines]
    return [
        {"prompt": r["question"] + GSM8K_SUFFIX, "answer": r["answer"].split("####")[-1].strip().replace(",", "")}
        for r in rows
    ]


def candidates(n: int, shared: Path) -> dict[str, list[dict]]:
    tasks = {kind: arithmetic(kind, n, seed=1) for kind in ("add2", "sub2", "mul1", "add3")}
    tasks["gsm8k"] = gsm8k(n, shared)
    return tasks


def choose(accuracies: dict[str, float]) -> str | None:
    qualified = [name for name, acc in accuracies.items() if RANGE[0] <= acc <= RANGE[1]]
    return min(qualified, key=lambda name: abs(accuracies[name] - TARGET)) if qualified else None


def main(argv: list[str] | None = None) -> dict:
    import torch

    from experiments.continual.run import REAL_MODEL
    from mentor.data.prompts import Example, encode_prompt
    from mentor.evaluation.intervals import wilson_interval
    from mentor.models.chat import stop_token_ids
    from mentor.models.loading import load_model, load_tokenizer
    from mentor.recipes.common import quiet_transformers
    from mentor.sample.hf import HFSampler
    from mentor.tasks.graders import numeric_match

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE))
    parser.add_argument("--model", default=str(REAL_MODEL))
    parser.add_argument("--problems", type=int, default=100)
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[2].parent / "shared" / "real"))
    args = parser.parse_args(argv)
    quiet_transformers()
    started = time.time()
    tokenizer, model = load_tokenizer(args.model), load_model(args.model).eval()
    stops = set(stop_token_ids(tokenizer, model))
    sampler = HFSampler(model, tokenizer, NEW_TOKENS, batch_size=50)
    rows = {}
    for name, problems in candidates(args.problems, Path(args.shared)).items():
        prompt_ids = [encode_prompt(tokenizer, Example(prompt=p["prompt"]), True) for p in problems]
        with torch.no_grad():
            sampled = sampler.sample(prompt_ids, greedy=True)
        replies = [tokenizer.decode(c, skip_special_tokens=True) for c in sampled.completion_ids]
        correct = [numeric_match(r, p["answer"]) == 1.0 for r, p in zip(replies, problems)]
        rows[name] = {
            "accuracy": sum(correct) / len(correct),
            "ci": wilson_interval(sum(correct), len(correct)),
            "mean_length": sum(map(len, sampled.completion_ids)) / len(problems),
            "ended": sum(bool(c) and c[-1] in stops for c in sampled.completion_ids) / len(problems),
            "examples": [
                {"prompt": p["prompt"], "reply": r, "answer": p["answer"]} for p, r in zip(problems[:3], replies)
            ],
        }
        print(f"{name}: {rows[name]['accuracy']:.2f} ({time.time() - started:.0f}s)", flush=True)
    choice = choose({name: row["accuracy"] for name, row in rows.items()})
    result = {
        "protocol": "pilot_protocol.md (v1)",
        "rows": rows,
        "choice": choice,
        "minutes": (time.time() - started) / 60,
    }
    out = Path(args.out)
    (out / "pilot_results.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "pilot_results.md").write_text(report(result, args.problems))
    print(f"choice: {choice}")
    return result


def report(result: dict, n: int) -> str:
    lines = [
        "# A1 task pilot: results (protocol: `pilot_protocol.md`, fixed before this run)",
        "",
        f"SmolLM2-135M-Instruct, chat template, greedy, at most {NEW_TOKENS} new tokens, {n} validation problems per "
        f"task, mentor's numeric grader. One run, {result['minutes']:.1f} min on the shared 2-core CPU.",
        "",
        "| task | accuracy [95% Wilson] | mean reply tokens | replies ended |",
        "|---|---|---|---|",
    ]
    for name, row in result["rows"].items():
        low, high = row["ci"]
        mark = f"**{name}**" if name == result["choice"] else name
        lines.append(
            f"| {mark} | {100 * row['accuracy']:.0f}% [{100 * low:.0f}, {100 * high:.0f}] | {row['mean_length']:.1f} | "
            f"{100 * row['ended']:.0f}% |"
        )
    lines += [
        "",
        f"Rule: accuracy in [{RANGE[0]:.0%}, {RANGE[1]:.0%}], the closest to {TARGET:.0%}. "
        + (
            f"**Choice: {result['choice']}.**" if result["choice"] else "**No task qualifies** (protocol: redesign A1)."
        ),
        "",
        "## Replies (first 3 per task)",
        "",
    ]
    for name, row in result["rows"].items():
        for e in row["examples"]:
            reply = " ".join(e["reply"].split())[:160]
            lines.append(f"- {name}: *{e['prompt'][:70]}* -> {reply} (answer {e['answer']})")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
