"""Peak memory of per-token log-probs (and full reverse KL) at Qwen3's vocabulary: chunked vs naive, on CPU.

    python experiments/memory_logprobs.py [--tokens 2048] [--vocab 151936]

One 2,048-token sequence, forward AND backward (the training path). The model is a 1-layer Qwen3 with
Qwen3's vocabulary of 151,936 and a small hidden size, so the logits dominate as they do in real runs: the
naive path materialises (tokens x vocab) float32 logits, their log-softmax and their gradients; the chunked
path (``mentor.update.logprobs.token_logprobs``) holds one chunk at a time and recomputes it in backward.

Each variant runs in its own fresh process; a thread samples the resident set size every 0.5 ms and the
figure reported is the peak above the resident size just before the computation (model, inputs and
optimizer-free state already in memory), so the ratio compares what the computation itself costs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

# glibc raises its mmap threshold after big frees, after which freed tensors stay in the heap and the
# resident size stops tracking live memory. A fixed threshold keeps big tensors mmapped (returned on free),
# so the sampled peak is the live peak. The same setting applies to every variant.
FIXED_MMAP_ENV = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")

VARIANTS = ("naive_logprobs", "chunked_logprobs", "naive_reverse_kl", "chunked_reverse_kl")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


class PeakSampler:
    def __init__(self, interval: float = 0.0005):
        self.interval, self.peak, self._stop = interval, _rss_bytes(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


def _model(vocab: int, seed: int):
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
    )
    return Qwen3ForCausalLM(config)


def run_variant(variant: str, tokens: int, vocab: int) -> dict:
    import gc

    import torch

    from mentor.update.divergence import naive_reverse_kl, reverse_kl
    from mentor.update.logprobs import naive_token_logprobs, token_logprobs

    torch.set_num_threads(2)
    student = _model(vocab, 0)
    teacher = _model(vocab, 1) if "reverse_kl" in variant else None
    input_ids = torch.randint(0, vocab, (1, tokens))
    attention_mask = torch.ones_like(input_ids)
    gc.collect()
    baseline = _rss_bytes()
    start = time.perf_counter()
    with PeakSampler() as sampler:
        if variant == "naive_logprobs":
            value = naive_token_logprobs(student, input_ids, attention_mask).sum()
        elif variant == "chunked_logprobs":
            value = token_logprobs(student, input_ids, attention_mask)[0].sum()
        elif variant == "naive_reverse_kl":
            value = naive_reverse_kl(student, teacher, input_ids, attention_mask).sum()
        else:
            value = reverse_kl(student, teacher, input_ids, attention_mask).sum()
        value.backward()
    return {
        "variant": variant,
        "peak_mib": (sampler.peak - baseline) / 2**20,
        "seconds": time.perf_counter() - start,
        "value": float(value),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--vocab", type=int, default=151_936)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.tokens, args.vocab)))
        return
    results = {}
    for variant in VARIANTS:
        child = subprocess.run(
            [sys.executable, __file__, "--variant", variant, "--tokens", str(args.tokens), "--vocab", str(args.vocab)],
            capture_output=True,
            text=True,
            check=True,
            env=FIXED_MMAP_ENV,
        )
        results[variant] = json.loads(child.stdout.strip().splitlines()[-1])
        r = results[variant]
        print(
            f"{variant:>20}: peak {r['peak_mib']:8.1f} MiB above baseline, {r['seconds']:.2f} s, value {r['value']:.6g}"
        )
    for kind in ("logprobs", "reverse_kl"):
        naive, chunked = results[f"naive_{kind}"], results[f"chunked_{kind}"]
        print(
            f"{kind}: chunked uses {naive['peak_mib'] / chunked['peak_mib']:.1f}x less peak memory than naive "
            f"({chunked['peak_mib']:.0f} vs {naive['peak_mib']:.0f} MiB; {args.tokens} tokens, vocab {args.vocab}); "
            f"values agree to {abs(naive['value'] - chunked['value']) / max(abs(naive['value']), 1e-9):.1e} relative"
        )


if __name__ == "__main__":
    main()
