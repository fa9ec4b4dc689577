"""Sampler throughput, vLLM against transformers ``generate``, and the time of one OPD step with each.

    .venv-vllm/bin/python experiments/vllm/throughput.py [--out experiments/vllm] [--quick]

Run in the virtualenv ``make vllm`` builds, on an otherwise idle machine. Both samplers run in this one process,
side by side, on the same prompts (real GSM8K questions in each model's chat template), in float32:

- models: SmolLM2-135M-Instruct (its GGUF, dequantized) and a model built from Qwen3-0.6B's config (random
  weights, Qwen3's real tokenizer from ../shared/real);
- sequences per call: 8, 32 and 64, ``--max-new-tokens`` 64. Random weights rarely end a turn, so most Qwen3
  completions run to the limit; tokens/s counts the tokens each sampler actually returned;
- each (model, sampler, size) is sampled once to warm up (vLLM: also its first weight sync), then timed
  ``--repeats`` times; the table gives the median and the range;
- one OPD step: ``mentor distill`` on SmolLM2 (teacher: its frozen copy), 8 prompts x 4 samples, 64 new tokens,
  with ``--sampler hf`` and ``--sampler vllm``; three steps, the median of steps 2-3 (step 1 pays the warm-up).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from mentor.models.loading import load_model, load_tokenizer, save_pretrained  # noqa: E402
from mentor.sample.hf import HFSampler  # noqa: E402
from mentor.sample.vllm import VLLMSampler  # noqa: E402
from tests.real_assets import shared_file, smollm2_gguf  # noqa: E402

SIZES = (8, 32, 64)
QWEN3_0_6B = dict(
    hidden_size=1024,
    intermediate_size=3072,
    num_hidden_layers=28,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=128,
    max_position_embeddings=40960,
    rope_theta=1_000_000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
    vocab_size=151936,
)  # Qwen/Qwen3-0.6B config.json


def questions(n: int) -> list[str]:
    lines = shared_file("data/gsm8k/test.jsonl").read_text().splitlines()[:n]
    return [json.loads(line)["question"] for line in lines]


def chat_prompts(tokenizer, n: int) -> list[list[int]]:
    return [
        list(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True, return_dict=True
            )["input_ids"]
        )
        for q in questions(n)
    ]


def smollm2(root: Path) -> tuple[str, object, object]:
    gguf = str(smollm2_gguf())
    model, tokenizer = load_model(gguf), load_tokenizer(gguf)
    path = root / "smollm2"
    save_pretrained(model, tokenizer, path)
    return str(path), model, tokenizer


def qwen3_0_6b(root: Path) -> tuple[str, object, object]:
    from transformers import AutoConfig, AutoModelForCausalLM

    tokenizer = load_tokenizer(str(shared_file("tokenizers/qwen3")))
    config = AutoConfig.for_model(
        "qwen3",
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
        **QWEN3_0_6B,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    path = root / "qwen3-0.6b-random"
    save_pretrained(model, tokenizer, path)
    return str(path), model, tokenizer


def rate(sampler, prompts: list[list[int]], repeats: int) -> list[float]:
    sampler.sample(prompts)  # warm-up (vLLM: the first weight sync too)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = sampler.sample(prompts)
        rates.append(sum(len(c) for c in out.completion_ids) / (time.perf_counter() - start))
    return rates


def throughput(name: str, path: str, model, tokenizer, max_new_tokens: int, repeats: int) -> list[dict]:
    prompts = chat_prompts(tokenizer, max(SIZES))
    longest = max(len(p) for p in prompts)
    engine = VLLMSampler(
        model,
        tokenizer,
        path,
        max_new_tokens,
        temperature=1.0,
        dtype="float32",
        seed=0,
        max_model_len=longest + max_new_tokens,
    )
    hf = HFSampler(model, tokenizer, max_new_tokens, temperature=1.0, batch_size=max(SIZES))
    rows = []
    try:
        for size in SIZES:
            row = {"model": name, "sequences": size}
            for label, sampler in (("hf", hf), ("vllm", engine)):
                row[label] = rate(sampler, prompts[:size], repeats)
                print(f"{name} x{size} {label}: {statistics.median(row[label]):.0f} tokens/s", flush=True)
            rows.append(row)
    finally:
        engine.close()
    return rows


def opd_step_seconds(gguf: str, prompts_file: Path, out: Path, sampler: str) -> dict:
    from mentor.config import DistillConfig
    from mentor.recipes.distill import run_distill

    config = DistillConfig(
        student=gguf,
        teacher="self",
        prompts=str(prompts_file),
        sampler=sampler,
        steps=3,
        batch_size=8,
        group_size=4,
        max_new_tokens=64,
        max_prompt_tokens=256,
        learning_rate=1e-5,
        micro_batch_size=8,
        check=False,
        output_dir=str(out / sampler),
        quiet=True,
    )
    _, history = run_distill(config)
    steps = [row for row in history if "loss" in row][1:]
    keys = ("time_step", "time_sample", "time_score", "time_update")
    return {k: statistics.median(row[k] for row in steps) for k in keys if k in steps[0]}


def _shown(rates: list[float]) -> str:
    """The median, and the range when there was more than one timed repeat."""
    median = f"{statistics.median(rates):.0f}"
    return median if len(rates) == 1 else f"{median} ({min(rates):.0f}-{max(rates):.0f})"


def write_report(out: Path, rows: list[dict], steps: dict, args) -> None:
    lines = [
        "# vLLM (CPU build) against transformers `generate`: sampler throughput and one OPD step",
        "",
        f"`experiments/vllm/throughput.py` (timed after a warm-up; float32; "
        f"{args.max_new_tokens} new tokens; temperature 1; this machine's 2 CPU cores).",
        "",
        "| model | sequences | transformers tokens/s | vLLM tokens/s | vLLM / transformers |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        hf, vl = statistics.median(row["hf"]), statistics.median(row["vllm"])
        lines.append(
            f"| {row['model']} | {row['sequences']} | {_shown(row['hf'])} | {_shown(row['vllm'])} | {vl / hf:.2f}x |"
        )
    if steps:
        lines += [
            "",
            "One OPD step, SmolLM2-135M-Instruct (8 prompts x 4 samples, 64 new tokens; median of steps 2-3), seconds:",
            "",
            "| sampler | step | sampling | teacher scoring | update |",
            "|---|---|---|---|---|",
        ]
        for sampler, t in steps.items():
            lines.append(
                f"| {sampler} | {t['time_step']:.1f} | {t.get('time_sample', 0):.1f} | "
                f"{t.get('time_score', 0):.1f} | {t['time_update']:.1f} |"
            )
        ratio = steps["hf"]["time_step"] / steps["vllm"]["time_step"]
        lines += ["", f"Step time, transformers / vLLM: {ratio:.2f}x."]
    (out / "results.md").write_text("\n".join(lines) + "\n")


PARTS = ("smollm2", "qwen3", "opd")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent))
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--parts",
        default=",".join(PARTS),
        help="which measurements to (re)run; the others are kept from the out folder's results.json",
    )
    parser.add_argument("--quick", action="store_true", help="SmolLM2 only, one repeat, no OPD step")
    args = parser.parse_args()
    parts = ["smollm2"] if args.quick else [p for p in args.parts.split(",") if p]
    if args.quick:
        args.repeats = 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "results.json"
    results = json.loads(saved.read_text()) if saved.exists() else {"throughput": {}, "opd_step": {}}
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="mentor-bench-") as scratch:
        root = Path(scratch)
        for part, name, build in (
            ("smollm2", "SmolLM2-135M-Instruct", smollm2),
            ("qwen3", "Qwen3-0.6B config, random weights", qwen3_0_6b),
        ):
            if part in parts:  # each part is written as soon as it is measured: a stopped run keeps it
                results["throughput"][name] = throughput(name, *build(root), args.max_new_tokens, args.repeats)
                saved.write_text(json.dumps(results, indent=1))
        if "opd" in parts:
            prompts_file = root / "prompts.jsonl"
            prompts_file.write_text(
                "".join(json.dumps({"messages": [{"role": "user", "content": q}]}) + "\n" for q in questions(64))
            )
            for sampler in ("hf", "vllm"):
                results["opd_step"][sampler] = opd_step_seconds(
                    str(smollm2_gguf()), prompts_file, root / "opd", sampler
                )
                saved.write_text(json.dumps(results, indent=1))
    rows = [row for model_rows in results["throughput"].values() for row in model_rows]
    write_report(out, rows, results["opd_step"] if len(results["opd_step"]) == 2 else {}, args)
    print((out / "results.md").read_text())


if __name__ == "__main__":
    main()
