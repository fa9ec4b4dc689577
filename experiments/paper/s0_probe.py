"""S0 probe: SFT a fresh 4x64 Qwen3 (experiments.paper.steps.fresh_model) on a chain format; eval per-step / chain acc.

Mirrors mentor's SFT: plain prompt (bos + text), completion + eos, NLL summed over completion tokens / tokens,
AdamW(0.9, 0.99), wd 0, grad clip 1.0, linear warmup then cosine to 0, batch 64, one pass over fresh problems.
"""

import argparse
import json
import math
import random
import re
import sys
import time

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
import os

import torch

from experiments.paper.steps import STUDENT_ARCH, fresh_model
from mentor.data.prompts import Example, encode_completion, encode_prompt
from mentor.evaluation.accuracy import evaluate
from mentor.models.loading import load_model, load_tokenizer
from mentor.tasks.base import Problem, unique_problems

STEPS = int(os.environ.get("CHAIN", "8"))
LABELS = "abcdefgh"


# ---- formats: make(rng, n) -> Problem(prompt, answer, solution, meta={'start','addends'}) ; parse(completion) -> values
def make_label(rng, n=STEPS):
    v = rng.randint(0, 9)
    s = v
    p, st, ad = str(v), [], []
    for lab in LABELS[:n]:
        d = rng.randint(0, 9)
        v = (v + d) % 10
        ad.append(d)
        p += f"{lab}{d}"
        st.append(f"{lab}{d}={v}")
    return Problem(prompt=p + "=", answer=str(v), solution="".join(st), meta=dict(start=s, addends=ad))


def parse_label(c):
    return [m.group(3) for m in re.finditer(r"([a-h])(\d)=(\d+)", c.strip())]


def make_sum(rng, n=STEPS):  # 2+9+1+7...= -> 2+9=1;1+1=2;...
    v = rng.randint(0, 9)
    s = v
    ad = [rng.randint(0, 9) for _ in range(n)]
    st = []
    for d in ad:
        w = (v + d) % 10
        st.append(f"{v}+{d}={w}")
        v = w
    return Problem(
        prompt="+".join(map(str, [s] + ad)) + "=", answer=str(v), solution=";".join(st), meta=dict(start=s, addends=ad)
    )


def parse_sum(c):
    return [m.group(3) for m in re.finditer(r"(\d+)\+(\d)=(\d+)", c.strip())]


def make_align(rng, n=STEPS):  # 2+9=?+1=?... -> +9=1+1=2... : completion token k copies prompt token k+1, '?' filled
    v = rng.randint(0, 9)
    s = v
    ad = [rng.randint(0, 9) for _ in range(n)]
    st = []
    for d in ad:
        v = (v + d) % 10
        st.append(f"+{d}={v}")
    return Problem(
        prompt=str(s) + "".join(f"+{d}=?" for d in ad),
        answer=str(v),
        solution="".join(st),
        meta=dict(start=s, addends=ad),
    )


def parse_align(c):
    return [m.group(2) for m in re.finditer(r"\+(\d)=(\d+)", c.strip())]


LET = "abcdefghij"  # addend d written as the letter LET[d]: addends and values use disjoint tokens


def make_alignL(rng, n=STEPS):  # 2+j=?+b=?... -> +j=1+b=2...
    v = rng.randint(0, 9)
    s = v
    ad = [rng.randint(0, 9) for _ in range(n)]
    st = []
    for d in ad:
        v = (v + d) % 10
        st.append(f"+{LET[d]}={v}")
    return Problem(
        prompt=str(s) + "".join(f"+{LET[d]}=?" for d in ad),
        answer=str(v),
        solution="".join(st),
        meta=dict(start=s, addends=ad),
    )


def parse_alignL(c):
    return [m.group(2) for m in re.finditer(r"\+([a-j])=(\d+)", c.strip())]


def running_sum(rng, n, start_max, addend_max, mod):  # aligned, 2-digit values: 02+9=??+1=??... -> +9=11+1=12...
    v = rng.randint(0, start_max)
    s = v
    ad = [rng.randint(0, addend_max) for _ in range(n)]
    st = []
    for d in ad:
        v = (v + d) % mod if mod else v + d
        st.append(f"+{d}={v:02d}")
    return Problem(
        prompt=f"{s:02d}" + "".join(f"+{d}=??" for d in ad),
        answer=f"{v:02d}",
        solution="".join(st),
        meta=dict(start=s, addends=ad, mod=mod),
    )


def make_align2(rng, n=STEPS):
    return running_sum(rng, n, 9, 9, None)  # NON-modular


def make_align100(rng, n=STEPS):
    return running_sum(rng, n, 99, 9, 100)  # modulo 100, start 00-99


def make_align2s(rng, n=STEPS):
    return running_sum(rng, n, 9, 5, None)  # NON-modular, addends 0-5: 16 steps fit


def make_align20(rng, n=STEPS):
    return running_sum(rng, n, 19, 9, 20)  # modulo 20: 03+9=??... -> +9=12+9=01...


def parse_align2(c):
    return [m.group(2) for m in re.finditer(r"\+(\d)=(\d+)", c.strip())]


def make_sum2(rng, n=STEPS):  # NON-modular running sum, natural: 2+9+1+7...= -> 2+9=11;11+1=12;...
    v = rng.randint(0, 9)
    s = v
    ad = [rng.randint(0, 9) for _ in range(n)]
    st = []
    for d in ad:
        st.append(f"{v}+{d}={v + d}")
        v = v + d
    return Problem(
        prompt="+".join(map(str, [s] + ad)) + "=",
        answer=str(v),
        solution=";".join(st),
        meta=dict(start=s, addends=ad, mod=None),
    )


def make_mix(rng, n=STEPS):  # training: half align2 (plain sum), half align (mod 10); tested on align (mod 10)
    return make_align2(rng, n) if rng.random() < 0.5 else make_align(rng, n)


FORMATS = {
    "align2s": (make_align2s, parse_align2),
    "align100": (make_align100, parse_align2),
    "mix": (make_mix, parse_align),
    "align20": (make_align20, parse_align2),
    "align2": (make_align2, parse_align2),
    "sum2": (make_sum2, parse_sum),
    "alignL": (make_alignL, parse_alignL),
    "label": (make_label, parse_label),
    "sum": (make_sum, parse_sum),
    "align": (make_align, parse_align),
}


def step_acc(values, prob):
    prev, right = str(prob.meta["start"]), 0
    mod = prob.meta.get("mod", 10)
    for i, d in enumerate(prob.meta["addends"]):
        if i >= len(values) or not prev.isdigit():
            break
        if mod in (20, 100):
            right += values[i].isdigit() and int(values[i]) == (int(prev) + d) % mod
        elif mod:
            if len(prev) != 1:
                break
            right += values[i] == str((int(prev) + d) % 10)
        else:
            right += values[i].isdigit() and int(values[i]) == int(prev) + d
        prev = values[i]
    return right / len(prob.meta["addends"])


class T:
    def __init__(s, fmt):
        s.make, s.parse = FORMATS[fmt]
        s.name = fmt

    def test_problems(s, n):
        make = make_align if s.name == "mix" else s.make
        return unique_problems(lambda r: make(r), n, 314_159)

    def grade(s, c, p):
        v = s.parse(c)
        return float(len(v) == STEPS and v[-1] == p.answer)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fmt", default="label")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--sched", default="cosine")
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--curriculum", default="", help="e.g. '1-8': chain lengths drawn uniformly in training")
    ap.add_argument("--evals", default="", help="comma-separated steps to evaluate at (end always)")
    ap.add_argument("--n_eval", type=int, default=200)
    ap.add_argument("--log_every", type=int, default=25)
    ap.add_argument("--out", default="/tmp/s0probe/run")
    ap.add_argument("--batch", type=int, default=64)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    task = T(a.fmt)
    path = fresh_model(__import__("pathlib").Path(a.out) / "init", STUDENT_ARCH, a.seed)
    tok = load_tokenizer(str(path))
    model = load_model(str(path))
    test = task.test_problems(a.n_eval)
    held = {p.prompt for p in task.test_problems(2000)}
    lo, hi = map(int, a.curriculum.split("-")) if a.curriculum else (STEPS, STEPS)
    rng = random.Random(a.seed + 1000)

    def draw():
        while True:
            p = task.make(rng, rng.randint(lo, hi))
            if p.prompt not in held:
                return p

    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.99), weight_decay=0.0)

    def lr_at(t):
        if t < a.warmup:
            return (t + 1) / a.warmup
        if a.sched == "constant":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * (t - a.warmup) / max(1, a.steps - a.warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    evals = sorted({int(x) for x in a.evals.split(",") if x} | {a.steps})
    log = {"args": vars(a), "loss": [], "evals": []}

    def run_eval(step):
        model.eval()
        t0 = time.time()
        r = evaluate(model, tok, task, test, 5 * STEPS + 8)
        sa = sum(step_acc(task.parse(c), p) for c, p in zip(r.completions, test)) / len(test)
        distinct = len(set(r.completions))
        # per position: value right given the model's own previous value (local) / equal to the true prefix sum
        pos_local, pos_true = [0] * STEPS, [0] * STEPS
        for c, p in zip(r.completions, test):
            vals, prev, truth = task.parse(c), str(p.meta["start"]), p.meta["start"]
            mod = p.meta.get("mod", 10)
            for i, d in enumerate(p.meta["addends"]):
                truth = (truth + d) % mod if mod else truth + d
                if i >= len(vals) or not vals[i].isdigit():
                    break
                pos_true[i] += int(vals[i]) == truth
                if prev.isdigit():
                    pos_local[i] += int(vals[i]) == ((int(prev) + d) % mod if mod else int(prev) + d)
                prev = vals[i]
        pos_local = [round(x / len(test), 3) for x in pos_local]
        pos_true = [round(x / len(test), 3) for x in pos_true]
        e = dict(
            step=step,
            step_acc=round(sa, 4),
            chain_acc=round(r.accuracy, 4),
            distinct=distinct,
            eval_s=round(time.time() - t0, 1),
            pos_local=pos_local,
            pos_true=pos_true,
            example=[test[0].prompt, r.completions[0]],
        )
        log["evals"].append(e)
        print("EVAL", json.dumps(e), flush=True)
        log.setdefault("completions", {})[step] = r.completions
        model.train()

    model.train()
    t_train = 0.0
    run_loss = []
    for step in range(1, a.steps + 1):
        t0 = time.time()
        probs = [draw() for _ in range(a.batch)]
        seqs, masks = [], []
        for p in probs:
            pi = encode_prompt(tok, Example(prompt=p.prompt))
            ci = encode_completion(tok, p.solution)
            seqs.append(pi + ci)
            masks.append([0] * len(pi) + [1] * len(ci))
        L = max(map(len, seqs))
        ids = torch.full((len(seqs), L), tok.pad_token_id)
        am = torch.zeros(len(seqs), L, dtype=torch.long)
        lm = torch.zeros(len(seqs), L)
        for i, (s, m) in enumerate(zip(seqs, masks)):
            ids[i, : len(s)] = torch.tensor(s)
            am[i, : len(s)] = 1
            lm[i, : len(m)] = torch.tensor(m, dtype=torch.float)
        logits = model(input_ids=ids, attention_mask=am).logits[:, :-1]
        lp = torch.log_softmax(logits.float(), -1).gather(-1, ids[:, 1:, None])[..., 0]
        mask = lm[:, 1:]
        loss = -(lp * mask).sum() / mask.sum()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        t_train += time.time() - t0
        run_loss.append(loss.item())
        if step % a.log_every == 0:
            m = sum(run_loss) / len(run_loss)
            run_loss = []
            log["loss"].append([step, round(m, 4)])
            print(f"step {step} loss {m:.4f} s/step {t_train / step:.3f}", flush=True)
        if step in evals:
            run_eval(step)
    log["s_per_step"] = round(t_train / a.steps, 4)
    json.dump(log, open(a.out + ".json", "w"), indent=1)
    print("DONE s/step", log["s_per_step"])


if __name__ == "__main__":
    main()
