"""Prune pilot (issue 20, A2): which rule and dose of layer removal makes SmolLM2-135M-Instruct's A2 student.

The protocol (candidates, prompts, measurements, the choice rule) is ``protocol.md`` beside this file, fixed
before the first run. Writes ``results.json`` and ``results.md`` here (or in ``--out``).

    nice -n 10 .venv/bin/python experiments/prune_pilot/run.py
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))  # real_assets: the GGUF, fetched once into the cache

from real_assets import SHARED_REAL, smollm2_gguf  # noqa: E402

from mentor.evaluation.intervals import percentile_interval  # noqa: E402
from mentor.models.loading import count_parameters, load_model, load_tokenizer  # noqa: E402
from mentor.models.prune import block_influence, layers_by_influence, layers_evenly, layers_every, prune_model  # noqa: E402
from mentor.recipes.common import quiet_transformers  # noqa: E402

MAX_NEW_TOKENS = 192
SPEED_TOKENS, SPEED_ROUNDS = 64, 3
BOOTSTRAP = dict(replicates=2000, seed=0)
FACTS = [
    ("What is the capital of France?", ("paris",)),
    ("How many legs does a spider have?", ("8", "eight")),
    ("Who wrote Romeo and Juliet?", ("shakespeare",)),
    ("What is the largest planet in our solar system?", ("jupiter",)),
    ("At what temperature in degrees Celsius does water boil at sea level?", ("100",)),
    ("What color is the sky on a clear day?", ("blue",)),
]
RULE = dict(eos_margin=0.25, distinct_margin=0.15, repetition_margin=0.15, max_kl=2.0, min_kl_low=0.1)


def prompts() -> list[dict]:
    rows = [json.loads(line) for line in (SHARED_REAL / "data/gsm8k/test.jsonl").read_text().splitlines()[:10]]
    gsm = [{"text": r["question"], "kind": "gsm8k", "reference": r["answer"].split("####")[-1].strip()} for r in rows]
    return gsm + [{"text": q, "kind": "fact", "reference": list(words)} for q, words in FACTS]


def candidates(scores: list[float]) -> dict[str, list[int]]:
    return {
        "even-3": layers_evenly(30, 3),
        "even-4": layers_evenly(30, 4),
        "even-6": layers_evenly(30, 6),
        "every-5": layers_every(30, 5),
        "bi-3": layers_by_influence(scores, 3),
        "bi-4": layers_by_influence(scores, 4),
        "bi-6": layers_by_influence(scores, 6),
        "issue-3": [12, 16, 20],
    }


def greedy(model, tokenizer, prompt_ids: list[list[int]], eos: int) -> list[list[int]]:
    """Greedy completions (batched, left-padded), each cut after its first EOS."""
    width = max(map(len, prompt_ids))
    pad = tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompt_ids])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompt_ids])
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=MAX_NEW_TOKENS,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=pad,
        )
    completions = []
    for row in out[:, width:].tolist():
        completions.append(row[: row.index(eos) + 1] if eos in row else row)
    return completions


def score(student, teacher, prompt: list[int], completion: list[int]) -> tuple[list[float], list[float]]:
    """Per completion token: full reverse KL(student || teacher) and log q - log p_teacher of the token."""
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        positions = slice(len(prompt) - 1, len(prompt) + len(completion) - 1)
        q = torch.log_softmax(student(ids, use_cache=False).logits[0, positions].float(), -1)
        p = torch.log_softmax(teacher(ids, use_cache=False).logits[0, positions].float(), -1)
    full = (q.exp() * (q - p)).sum(-1)
    token = torch.tensor(completion)[:, None]
    sampled = (q.gather(-1, token) - p.gather(-1, token))[:, 0]
    return full.tolist(), sampled.tolist()


def distinct2(tokens: list[int]) -> float:
    pairs = list(zip(tokens, tokens[1:]))
    return len(set(pairs)) / len(pairs) if pairs else 1.0


def repetition4(tokens: list[int]) -> float:
    grams = [tuple(tokens[i : i + 4]) for i in range(len(tokens) - 3)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def pooled_interval(per_prompt: list[list[float]]) -> tuple[float, float]:
    """Percentile bootstrap over prompts of the token-pooled mean."""
    rng = np.random.default_rng(BOOTSTRAP["seed"])
    sums = np.array([sum(v) for v in per_prompt])
    counts = np.array([len(v) for v in per_prompt])
    picks = rng.integers(0, len(per_prompt), size=(BOOTSTRAP["replicates"], len(per_prompt)))
    return percentile_interval(sums[picks].sum(1) / np.maximum(counts[picks].sum(1), 1))


def correct(item: dict, text: str) -> bool:
    if item["kind"] == "fact":
        return any(re.search(rf"\b{re.escape(w)}\b", text.lower()) for w in item["reference"])
    numbers = re.findall(r"-?\d[\d,]*\.?\d*", text)
    return bool(numbers) and numbers[-1].replace(",", "").rstrip(".") == item["reference"]


def speed(models: dict, tokenizer, prompt_ids: list[int], eos: int) -> dict[str, float]:
    """Batch-1 greedy tokens/s, exactly SPEED_TOKENS new tokens; models alternate, median of the rounds."""
    times: dict[str, list[float]] = {name: [] for name in models}
    ids = torch.tensor([prompt_ids])
    for _ in range(SPEED_ROUNDS):
        for name, model in models.items():
            start = time.perf_counter()
            with torch.no_grad():
                out = model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    do_sample=False,
                    max_new_tokens=SPEED_TOKENS,
                    min_new_tokens=SPEED_TOKENS,
                    eos_token_id=eos,
                    pad_token_id=tokenizer.pad_token_id,
                )
            assert out.shape[1] - ids.shape[1] == SPEED_TOKENS
            times[name].append(SPEED_TOKENS / (time.perf_counter() - start))
    return {name: statistics.median(v) for name, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parent))
    args = parser.parse_args()
    quiet_transformers()
    torch.set_num_threads(1)  # protocol v2: 2 threads spin on a shared 2-core machine (4x the CPU time)
    started = time.time()
    gguf = smollm2_gguf()
    tokenizer, teacher = load_tokenizer(str(gguf)), load_model(str(gguf)).eval()
    eos = tokenizer.eos_token_id
    items = prompts()
    prompt_ids = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": it["text"]}], add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
        for it in items
    ]
    scores = block_influence(teacher, tokenizer)
    chosen = candidates(scores)
    models = {"teacher": teacher}
    for name, drop in chosen.items():
        models[name] = prune_model(copy.deepcopy(teacher), drop).eval()

    rows: dict[str, dict] = {}
    for name, model in models.items():
        t0 = time.time()
        completions = greedy(model, tokenizer, prompt_ids, eos)
        gen_s = time.time() - t0
        full, sampled = [], []
        for p, c in zip(prompt_ids, completions):
            f, s = score(model, teacher, p, c) if name != "teacher" else ([0.0] * len(c), [0.0] * len(c))
            full.append(f)
            sampled.append(s)
        texts = [tokenizer.decode(c, skip_special_tokens=True) for c in completions]
        n_tokens = sum(map(len, completions))
        rows[name] = {
            "dropped": chosen.get(name, []),
            "layers": model.config.num_hidden_layers,
            "parameters": count_parameters(model),
            "reverse_kl": sum(map(sum, full)) / n_tokens,
            "reverse_kl_interval": pooled_interval(full),
            "sampled_log_ratio": sum(map(sum, sampled)) / n_tokens,
            "eos_rate": float(np.mean([bool(c) and c[-1] == eos for c in completions])),
            "distinct2": float(np.mean([distinct2(c) for c in completions])),
            "repetition4": float(np.mean([repetition4(c) for c in completions])),
            "mean_length": n_tokens / len(completions),
            "facts_correct": sum(correct(it, t) for it, t in zip(items, texts) if it["kind"] == "fact"),
            "gsm8k_correct": sum(correct(it, t) for it, t in zip(items, texts) if it["kind"] == "gsm8k"),
            "completions": texts,
            "generation_seconds": gen_s,
        }
        print(
            f"{name}: rkl {rows[name]['reverse_kl']:.3f} eos {rows[name]['eos_rate']:.2f} "
            f"d2 {rows[name]['distinct2']:.3f} rep {rows[name]['repetition4']:.3f} ({time.time() - started:.0f}s)",
            flush=True,
        )

    tps = speed(models, tokenizer, prompt_ids[10], eos)
    teacher_row = rows["teacher"]
    for name, row in rows.items():
        row["tokens_per_second"] = tps[name]
        if name == "teacher":
            continue
        row["F1_eos"] = row["eos_rate"] >= teacher_row["eos_rate"] - RULE["eos_margin"]
        row["F2_distinct_repetition"] = (
            row["distinct2"] >= teacher_row["distinct2"] - RULE["distinct_margin"]
            and row["repetition4"] <= teacher_row["repetition4"] + RULE["repetition_margin"]
        )
        row["F3_kl"] = row["reverse_kl"] <= RULE["max_kl"]
        row["W_worse"] = row["reverse_kl_interval"][0] >= RULE["min_kl_low"]
        row["qualifies"] = row["F1_eos"] and row["F2_distinct_repetition"] and row["F3_kl"] and row["W_worse"]
    qualified = [n for n, r in rows.items() if r.get("qualifies")]
    choice = min(qualified, key=lambda n: (-len(rows[n]["dropped"]), rows[n]["reverse_kl"])) if qualified else None
    result = {
        "protocol": "experiments/prune_pilot/protocol.md",
        "model": str(gguf),
        "block_influence": scores,
        "rule": RULE,
        "max_new_tokens": MAX_NEW_TOKENS,
        "prompts": items,
        "models": rows,
        "choice": choice,
        "wall_minutes": (time.time() - started) / 60,
        "cpu_threads": torch.get_num_threads(),
    }
    out = Path(args.out)
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "results.md").write_text(report(result))
    print(f"choice: {choice}; {result['wall_minutes']:.1f} min")


def report(result: dict) -> str:
    rows, items = result["models"], result["prompts"]
    teacher = rows["teacher"]
    lines = [
        "# Prune pilot: results (protocol: `protocol.md`, fixed before this run)",
        "",
        f"SmolLM2-135M-Instruct (GGUF, dequantized float32, 30 layers) and 8 pruned candidates; 16 held-out chat "
        f"prompts (10 GSM8K test, 6 factual), greedy, at most {result['max_new_tokens']} new tokens. One run, "
        f"{result['wall_minutes']:.1f} min wall on the shared 2-core CPU (`nice -n 10`).",
        "",
        "| model | dropped | params | reverse KL (nats/token) [95% CI] | sampled log q/p | EOS rate | distinct-2 "
        "| rep-4 | mean len | facts /6 | GSM8K /10 | tokens/s (batch 1) | F1 F2 F3 W |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        low, high = r["reverse_kl_interval"]
        flags = (
            ""
            if name == "teacher"
            else " ".join("y" if r[k] else "n" for k in ("F1_eos", "F2_distinct_repetition", "F3_kl", "W_worse"))
        )
        lines.append(
            f"| {'**' + name + '**' if name == result['choice'] else name} | "
            f"{','.join(map(str, r['dropped'])) or '-'} | {r['parameters'] / 1e6:.1f}M | "
            f"{r['reverse_kl']:.3f} [{low:.3f}, {high:.3f}] | {r['sampled_log_ratio']:.3f} | "
            f"{r['eos_rate']:.2f} | {r['distinct2']:.3f} | {r['repetition4']:.3f} | {r['mean_length']:.0f} | "
            f"{r['facts_correct']} | {r['gsm8k_correct']} | {r['tokens_per_second']:.1f} "
            f"({r['tokens_per_second'] / teacher['tokens_per_second']:.2f}x) | {flags} |"
        )
    rule = result["rule"]
    lines += [
        "",
        f"Rule (protocol): F1 EOS rate >= teacher's - {rule['eos_margin']}; F2 distinct-2 >= teacher's - "
        f"{rule['distinct_margin']} and rep-4 <= teacher's + {rule['repetition_margin']}; F3 reverse KL <= "
        f"{rule['max_kl']}; W lower CI end >= {rule['min_kl_low']}. Choice: the most layers removed among those "
        "meeting all four; tie: lower reverse KL.",
        "",
    ]
    if result["choice"]:
        c = rows[result["choice"]]
        lines.append(
            f"**Choice: {result['choice']}** (drop {','.join(map(str, c['dropped']))}: "
            f"{c['layers']} layers, {c['parameters'] / 1e6:.1f}M parameters vs {teacher['parameters'] / 1e6:.1f}M, "
            f"{c['tokens_per_second'] / teacher['tokens_per_second']:.2f}x the teacher's batch-1 greedy speed)."
        )
    else:
        lines.append("**No candidate qualifies**: the pilot chooses nothing (protocol).")
    scores = result["block_influence"]
    lines += [
        "",
        "Block influence per layer (1 - cos(in, out), built-in calibration texts): "
        + ", ".join(f"{i}:{s:.3f}" for i, s in enumerate(scores)),
        "",
        "## Greedy answers (first 300 characters)",
        "",
    ]
    shown = [
        next(i for i, it in enumerate(items) if it["text"] == s) if isinstance(s, str) else s
        for s in ("What is the capital of France?", "How many legs does a spider have?", 0)
    ]
    for name, r in rows.items():
        lines.append(f"### {name}")
        for i in shown:
            text = " ".join(r["completions"][i].split())
            lines.append(
                f"- *{items[i]['text'][:60]}{'...' if len(items[i]['text']) > 60 else ''}* -> "
                f"{text[:300]}{'...' if len(text) > 300 else ''}"
            )
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
