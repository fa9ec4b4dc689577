"""Run by a transformers 4.x python (``tests/test_coe.py``): load saved CoE checkpoints the way 4.x does.

    python tests/transformers4_logits.py OUT.json TEXT DIR [DIR ...]

For each DIR it records the transformers version, the token ids of TEXT and of TEXT as a chat prompt, and
mentor's matmul-parameter count of the model in 4.x's per-expert layout; the logits of TEXT go to
``DIR/logits_transformers4.safetensors``. Only torch, transformers and safetensors are needed.
"""

import json
import sys
from pathlib import Path

import torch
import transformers
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mentor.evaluation.flops import MatmulParams  # noqa: E402  (torch + transformers only)


def main(out: str, text: str, *directories: str) -> None:
    results = {}
    for directory in directories:
        tokenizer = AutoTokenizer.from_pretrained(directory)
        model = AutoModelForCausalLM.from_pretrained(directory).eval()
        ids = tokenizer(text)["input_ids"]
        chat = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].float().contiguous()
        save_file({"logits": logits}, str(Path(directory) / "logits_transformers4.safetensors"))
        results[directory] = {
            "version": transformers.__version__,
            "ids": ids,
            "chat_ids": list(chat),
            "model_class": type(model).__name__,
            "matmul": MatmulParams.of(model).total,
        }
    Path(out).write_text(json.dumps(results))


if __name__ == "__main__":
    main(*sys.argv[1:])
