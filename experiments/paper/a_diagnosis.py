"""Why on-policy training from A1's start S0 does not help (run after `mentor bench paper --only A`).

Usage: a_diagnosis.py [RUN [TEACHER [STUDENT]]] (default: the run's S0 and A2's teacher). Reads a finished run (default runs/paperA) and measures, on 512 temperature-1 samples of S0 (the student
every on-policy arm starts from) scored by A2's 4x128 teacher:
  * how many samples leave the task's alphabet (a token other than 0-9, '+', '=' before the end of turn),
  * where the teacher's per-token penalty (reverse-KL advantage log p_teacher - log p_student) sits: on the
    first wrong token of a chain, after it, or in samples that left the alphabet;
and, from the run's A1 OPD curves, how much greedy test accuracy moves between evaluations 5 steps apart
while the reverse KL to T_RL is below 0.05 nats/token, against the binomial noise of 500 problems.
Writes A/a_diagnosis.json next to this file. Seed 0; one thread is enough (about 1 minute).
"""

import json
import re
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from mentor.data.prompts import Example, encode_prompt  # noqa: E402
from mentor.models.loading import load_model, load_tokenizer  # noqa: E402
from mentor.sample.hf import HFSampler  # noqa: E402
from mentor.score.local import LocalTeacher  # noqa: E402
from mentor.tasks.registry import get_task  # noqa: E402

run = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/paperA")
start = (
    Path(sys.argv[3])
    if len(sys.argv) > 3  # another student
    else Path(json.loads((run / "A1" / "start.json").read_text())["path"])
)
teacher_path = Path(sys.argv[2]) if len(sys.argv) > 2 else run / "A2" / "teacher" / "final"  # another teacher
torch.manual_seed(0)
tokenizer, student, teacher = load_tokenizer(str(start)), load_model(str(start)), load_model(str(teacher_path))
task = get_task("chains")
problems = task.train_problems(128, seed=99)
prompts = [encode_prompt(tokenizer, Example(prompt=p.prompt)) for p in problems for _ in range(4)]
sampled = HFSampler(student, tokenizer, max_new_tokens=88, temperature=1.0).sample(prompts)
sequences = [p + c for p, c in zip(sampled.prompt_ids, sampled.completion_ids)]
scores = LocalTeacher(teacher, tokenizer.pad_token_id).compute_logprobs(sequences, [len(p) for p in prompts])
alphabet = set("0123456789+=")
stats = {"samples": len(prompts), "left_alphabet": 0, "correct": 0}
penalty = {
    "first_wrong_token": 0.0,
    "after_first_wrong": 0.0,
    "right_before_any_error": 0.0,
    "in_samples_that_left_alphabet": 0.0,
}
for i, (prompt, completion) in enumerate(zip(sampled.prompt_ids, sampled.completion_ids)):
    problem = problems[i // 4]
    text_tokens = [tokenizer.decode([t]) for t in completion]
    eos_free = [t for t, tid in zip(text_tokens, completion) if tid not in (tokenizer.eos_token_id,)]
    left = any(t not in alphabet for t in eos_free)
    stats["left_alphabet"] += left
    stats["correct"] += task.grade(tokenizer.decode(completion, skip_special_tokens=True), problem)
    teacher_lp = scores[i][len(prompt) :].numpy()
    student_lp = np.array(sampled.completion_logprobs[i])
    advantage = teacher_lp - student_lp
    negative = np.minimum(advantage, 0.0)
    if left:
        penalty["in_samples_that_left_alphabet"] += float(negative.sum())
        continue
    solution = problem.solution
    first_wrong = next((k for k, t in enumerate(eos_free) if k >= len(solution) or t != solution[k]), None)
    if first_wrong is None:
        penalty["right_before_any_error"] += float(negative.sum())
    else:
        penalty["right_before_any_error"] += float(negative[:first_wrong].sum())
        penalty["first_wrong_token"] += float(negative[first_wrong])
        penalty["after_first_wrong"] += float(negative[first_wrong + 1 :].sum())
total = sum(penalty.values())
# after a slip, does the teacher want the student to go on from its written (wrong) value ("local") or from
# the true running sum ("global")? The teacher's mean log-prob of the value digits the student wrote, by kind
by_kind = {"local": [], "global": []}
for i, completion in enumerate(sampled.completion_ids):
    problem = problems[i // 4]
    text = tokenizer.decode(completion, skip_special_tokens=True)
    if any(ch not in alphabet for ch in text):
        continue
    teacher_lp = scores[i][len(sampled.prompt_ids[i]) :].numpy()
    previous, truth = int(problem.prompt[:2]), int(problem.prompt[:2])
    addends = [int(a) for a in re.findall(r"\+(\d)=\?\?", problem.prompt)]
    slipped = False
    for k, match in enumerate(re.finditer(r"\+(\d)=(\d\d)", text)):
        if k >= len(addends):
            break
        value, truth = int(match.group(2)), truth + addends[k]
        local = previous + addends[k]
        if slipped and local != truth and value in (local, truth):
            digits = teacher_lp[match.start(2) : match.end(2)]
            by_kind["local" if value == local else "global"].append(float(digits.sum()))
        slipped = slipped or value != truth
        previous = value

result = {
    "samples": stats,
    "negative_advantage_share": {k: v / total for k, v in penalty.items()},
    "mean_negative_advantage_per_sample": total / len(prompts),
    "after_a_slip_teacher_logprob_of_the_value": {
        kind: {"values": len(v), "mean_logprob": float(np.mean(v)) if v else None} for kind, v in by_kind.items()
    },
}
# the on-policy follow-ups run by hand (runs/diag, see A/analysis.md): greedy test/validation accuracy and the
# reverse KL (per token, on the student's samples) at their first and last 10 steps
follow_ups = {}
for path in sorted(Path("runs/diag").glob("*/metrics.jsonl")):
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    kl = [r.get("reverse_kl", r.get("full_reverse_kl")) for r in rows if "reverse_kl" in r or "full_reverse_kl" in r]
    if not kl:  # not an OPD run (the follow-up teacher's SFT)
        continue
    follow_ups[path.parent.name] = {
        "accuracy": [(r["step"], r["accuracy"]) for r in rows if "accuracy" in r],
        "kl_first_10": float(np.mean(kl[:10])),
        "kl_last_10": float(np.mean(kl[-10:])),
        "steps": len(kl),
    }
result["follow_ups"] = follow_ups
# greedy volatility of A1's OPD runs where the student is already close to T_RL
jumps = []
for seed in ("opd_seed0", "opd_seed1"):
    rows = [json.loads(line) for line in (run / "A1" / seed / "metrics.jsonl").read_text().splitlines()]
    kl = {r["step"]: r["reverse_kl"] for r in rows if "reverse_kl" in r}
    evals = [(r["step"], r["accuracy"]) for r in rows if "accuracy" in r]
    for (s0, a0), (s1, a1) in zip(evals, evals[1:]):
        if s0 > 0 and max(kl.get(s, 1.0) for s in range(s0 + 1, s1 + 1)) < 0.05:
            jumps.append(abs(a1 - a0))
p = 0.5
result["greedy_volatility"] = {
    "pairs": len(jumps),
    "mean_abs_change": float(np.mean(jumps)) if jumps else None,
    "max_abs_change": float(np.max(jumps)) if jumps else None,
    "binomial_mean_abs_change_500": float(np.sqrt(2 * p * (1 - p) / 500) * np.sqrt(2 / np.pi)),
}
name = (
    ""
    if len(sys.argv) <= 2
    else f"_{teacher_path.parent.name}" + (f"_{start.parent.name}" if len(sys.argv) > 3 else "")
)
out = Path(__file__).parent / "A" / f"a_diagnosis{name}.json"
out.write_text(json.dumps(result, indent=1))
print(json.dumps(result, indent=1))
