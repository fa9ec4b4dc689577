"""Follow-up to A2 (not part of its protocol): does OPD work with a teacher that recovers from a slip?

a_diagnosis.py found that after a slip the student goes on from the true running sum about half the time,
and A2's teacher (trained on perfect chains only) gives those values a mean log-prob of about -7.8: OPD
punishes the student's recoveries. This writes training chains for a teacher that has seen slips: in a
quarter of the chains one written value is off by one, and the chain goes on from the *true* sum (so the
teacher learns to recover). Same prompts, sizes and seed as A2's teacher; then, by hand (see A/analysis.md):

  mentor sft --model runs/paperA/A2/teacher_init --data runs/diag/recovering_chains.jsonl --task chains \
      --steps 800 --batch-size 64 --group-size 1 --learning-rate 3e-3 --lr-schedule cosine --warmup-steps 10 \
      --adam-beta2 0.99 --max-new-tokens 88 --eval-size 100 --seed 0 --output-dir runs/diag/recovering_teacher
  mentor distill --student runs/paperA/A2/sft_1n0/final --teacher runs/diag/recovering_teacher/final ...  (A2's OPD)
"""

import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from mentor.tasks.chains import ChainTask  # noqa: E402

SLIP_SHARE = 0.25
out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/diag/recovering_chains.jsonl")
out.parent.mkdir(parents=True, exist_ok=True)
rng = random.Random(0)
with out.open("w") as handle:
    for problem in ChainTask().train_problems(800 * 64, seed=0):
        steps = problem.solution.split("+")[1:]
        if rng.random() < SLIP_SHARE:
            k = rng.randrange(len(steps))
            addend, value = steps[k].split("=")
            slipped = int(value) + rng.choice((-1, 1))
            steps[k] = f"{addend}={max(slipped, 0):02d}"
        handle.write(json.dumps({"prompt": problem.prompt, "completion": "+" + "+".join(steps)}) + "\n")
print(out)
