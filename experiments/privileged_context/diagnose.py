"""Why did P not learn the facts? A diagnostic after the full run (not part of the protocol, which it does not change).

For each internal question, with the student's prompt (no memo) and with the teacher's (the memo in it):
- the log-prob per token of the reference answer (``Project Jade Meadow.`` / ``Room 354.``) under each model;
- how often the base, sampling as P's student did (temperature 1, 48 tokens), writes the answer at all.

On-policy distillation with the sampled reverse KL grades only tokens the student samples: if the student
almost never writes the answer, the teacher's knowledge of it has almost nothing to act on.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python -m experiments.privileged_context.diagnose
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def answer_logprobs(model, tokenizer, prompts: list[str], answers: list[str]) -> list[float]:
    """Mean log-prob per token of each answer as the assistant's turn after its prompt (the chat template)."""
    import torch

    from mentor.data.prompts import Example, encode_prompt, encode_target
    from mentor.models.chat import stop_token_ids

    stops = stop_token_ids(tokenizer, model)
    out = []
    for prompt, answer in zip(prompts, answers):
        example = Example(prompt=prompt, completion=answer)
        prompt_ids = encode_prompt(tokenizer, example, True)
        target = encode_target(tokenizer, example, True, stops)
        ids = torch.tensor([prompt_ids + target])
        with torch.no_grad():
            logits = model(ids).logits[0, len(prompt_ids) - 1 : -1].float()
        logprobs = torch.log_softmax(logits, -1).gather(1, torch.tensor(target)[:, None]).squeeze(1)
        out.append(float(logprobs.mean()))
    return out


def sampled_answer_rate(model, tokenizer, prompts: list[str], answers: list[str], samples: int, tokens: int) -> dict:
    import torch

    from mentor.data.prompts import Example, encode_prompt
    from mentor.sample.hf import HFSampler

    torch.manual_seed(0)
    prompt_ids = [encode_prompt(tokenizer, Example(prompt=p), True) for p in prompts for _ in range(samples)]
    sampled = HFSampler(model, tokenizer, tokens, temperature=1.0, batch_size=64).sample(prompt_ids)
    texts = [tokenizer.decode(c, skip_special_tokens=True) for c in sampled.completion_ids]
    hits = [a.lower() in t.lower() for t, a in zip(texts, (a for a in answers for _ in range(samples)))]
    return {"samples": len(hits), "with_answer": sum(hits)}


def main(argv: list[str] | None = None) -> dict:
    from experiments.continual.run import REAL_MODEL, CompanyDocs
    from experiments.privileged_context.run import FULL, teacher_view_problems
    from mentor.models.loading import load_model, load_tokenizer
    from mentor.recipes.common import quiet_transformers

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs/privileged_context", help="the full run's --out")
    parser.add_argument("--out", default=str(HERE / "diagnosis.json"))
    parser.add_argument("--samples", type=int, default=4, help="samples per question from the base")
    args = parser.parse_args(argv)
    quiet_transformers()
    docs = CompanyDocs(FULL.people)
    questions = docs.test_problems()
    answers = [CompanyDocs.chat_answer(p) for p in questions]
    student_prompts = [p.prompt for p in questions]
    teacher_prompts = [p.prompt for p in teacher_view_problems(docs)]
    tokenizer = load_tokenizer(str(REAL_MODEL))
    runs = Path(args.runs)
    models = {
        "base": str(REAL_MODEL),
        "P": str(runs / "privileged" / "final"),
        "C": str(runs / "control" / "final"),
        "midtrain 100%": str(runs / "mid_100" / "final"),
    }
    result: dict = {"answer_logprob_student_prompt": {}}
    for name, path in models.items():
        model = load_model(path).eval()
        values = answer_logprobs(model, tokenizer, student_prompts, answers)
        result["answer_logprob_student_prompt"][name] = sum(values) / len(values)
        if name == "base":
            teacher = answer_logprobs(model, tokenizer, teacher_prompts, answers)
            result["answer_logprob_teacher_prompt"] = sum(teacher) / len(teacher)
            result["base_samples"] = sampled_answer_rate(
                model, tokenizer, student_prompts, [p.answer for p in questions], args.samples, FULL.distill_tokens
            )
        print(name, json.dumps(result), flush=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
