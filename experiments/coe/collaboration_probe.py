"""Where the collaboration task fails: each step of ``fn(a op b)=a op b=x;fn(x)=y;y`` checked on its own.

    python experiments/coe/collaboration_probe.py experiments/coe/runs/seed0

For the base, mixed SFT, the functions expert and CoE-3E2A (and its full variant) of one seed's run: the share
of the 200 collaboration test problems whose completion copies the new operator (``a op b=``), gets the new
operator's value, applies the asked function (``fn(x)=``), and gets that function's value of its own ``x``.
"""

from __future__ import annotations

import re
import sys

import torch

from mentor.evaluation.accuracy import evaluate
from mentor.models.loading import load_model, load_tokenizer
from mentor.recipes.common import quiet_transformers
from mentor.tasks.coe_tasks import BASE_OPERATORS, NEW_FUNCTIONS, NEW_OPERATORS, OperatorFunctionTask


def step_checks(prompt: str, completion: str) -> dict[str, bool]:
    fn, a, op, b = re.fullmatch(r"(\w+)\((\d) (\w+) (\d)\)=", prompt).groups()
    first = re.match(r"(\d) (\w+) (\d)=(\d+);", completion)
    second = re.search(r";(\w+)\((\d+)\)=(\d+);", completion)
    return {
        "copies the new operator": bool(first) and first.group(2) == op,
        "writes a known operator instead": bool(first) and first.group(2) in BASE_OPERATORS,
        "new operator's value right": bool(first)
        and first.group(2) == op
        and int(first.group(4)) == NEW_OPERATORS[op](int(a), int(b)),
        "applies the asked function": bool(second) and second.group(1) == fn,
        "function's value of its own x right": bool(second)
        and second.group(1) == fn
        and int(second.group(3)) == NEW_FUNCTIONS[fn](int(second.group(2))),
    }


def main(seed_dir: str) -> None:
    quiet_transformers()
    torch.set_num_threads(1)
    task = OperatorFunctionTask()
    problems = task.test_problems(200)
    models = {
        "base": "experiments/coe/base_model",
        "mixed SFT": f"{seed_dir}/mixed_sft/final",
        "expert functions": f"{seed_dir}/coe_shared/experts/functions/final",
        "CoE-3E2A": f"{seed_dir}/coe_3e2a/stage2/final",
        "CoE-3E2A, full": f"{seed_dir}/coe_3e2a__stage_2_trains_all__full/stage2/final",
    }
    for name, path in models.items():
        result = evaluate(load_model(path), load_tokenizer(path), task, problems, 32)
        checks = [step_checks(p.prompt, c.strip()) for p, c in zip(problems, result.completions)]
        shares = {k: sum(c[k] for c in checks) / len(checks) for k in checks[0]}
        print(
            f"| {name} | {result.accuracy:.1%} | "
            + " | ".join(f"{v:.1%}" for v in shares.values())
            + f" | `{result.completions[1]}` |"
        )


if __name__ == "__main__":
    print("| model | accuracy | " + " | ".join(step_checks("gup(1 zap 2)=", "")) + " | e.g. |")
    main(sys.argv[1])
