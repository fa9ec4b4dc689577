"""Experiment B's dose pilot (issue 20): which mid-training dose makes SmolLM2-135M-Instruct forget?

The protocol (doses, pilot prompts disjoint from the test prompts, the rule) is ``dose_pilot_protocol.md`` beside
this file, fixed before the first run. Each dose's row is saved as it finishes; a rerun skips finished doses.

    nice -n 10 .venv/bin/python -m experiments.continual.dose_pilot --out runs/dose_pilot
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import replace
from pathlib import Path

from experiments.continual.run import (
    FULL,
    CompanyDocs,
    _document_examples,
    _evaluate_row,
    _midtrain,
    _with_wilson,
    resolve_inputs,
)

HERE = Path(__file__).resolve().parent
DOSES = {"d1": (60, 1e-4), "d2": (60, 3e-4), "d3": (120, 3e-4), "d4": (120, 1e-3)}
PILOT_PROMPTS, PILOT_SEED, TEST_PROMPTS, TEST_SEED = 60, 3, 100, 0
DROP = 0.05  # the rule: at least 5 points below the base


def pilot_prompts(path: Path, n: int = PILOT_PROMPTS) -> list:
    """``n`` IFEval prompts drawn (seed 3) from those outside experiment B's 100 test prompts."""
    from mentor.tasks.loaders import load_problems

    problems = load_problems("ifeval", path)
    test = {p.prompt for p in random.Random(TEST_SEED).sample(problems, TEST_PROMPTS)}
    rest = [p for p in problems if p.prompt not in test]
    chosen = random.Random(PILOT_SEED).sample(rest, n)
    assert not {p.prompt for p in chosen} & test
    return chosen


def choose(rows: dict[str, dict]) -> str | None:
    base = rows["base"]["ifeval_prompt_strict"]["value"]
    for dose in DOSES:
        if dose in rows and rows[dose]["ifeval_prompt_strict"]["value"] <= base - DROP + 1e-9:
            return dose
    return None


def summary(evaluation: dict) -> dict:
    return {
        "internal_qa": _with_wilson(sum(evaluation["qa"]), len(evaluation["qa"])),
        "ifeval_prompt_strict": _with_wilson(sum(evaluation["prompt_strict"]), len(evaluation["prompt_strict"])),
        "items": evaluation,
    }


def main(argv: list[str] | None = None) -> dict:
    from mentor.models.loading import load_model, load_tokenizer
    from mentor.recipes.common import quiet_transformers

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/dose_pilot")
    parser.add_argument("--model", default=None)
    parser.add_argument("--ifeval", default=None)
    parser.add_argument("--pilot-prompts", type=int, default=PILOT_PROMPTS)
    args = parser.parse_args(argv)
    quiet_transformers()
    model_path, ifeval_path = resolve_inputs(args.model, args.ifeval)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    state_file = out / "state.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {"rows": {}, "minutes": {}}
    docs, scale = CompanyDocs(FULL.people), FULL
    tokenizer = load_tokenizer(str(model_path))
    prompts = pilot_prompts(ifeval_path, args.pilot_prompts)
    examples = _document_examples(tokenizer, docs)
    for name in ("base", *DOSES):
        if name in state["rows"]:
            continue
        started = time.time()
        if name == "base":
            model = load_model(str(model_path))
        else:
            steps, lr = DOSES[name]
            dose = replace(scale, midtrain_steps=steps, midtrain_lr=lr)
            model = load_model(str(_midtrain(out / name, model_path, examples, dose, quiet=True)))
        state["rows"][name] = summary(_evaluate_row(model, tokenizer, docs, prompts, scale))
        state["minutes"][name] = (time.time() - started) / 60
        state_file.write_text(json.dumps(state, indent=1))
        row = state["rows"][name]
        print(
            f"{name}: QA {row['internal_qa']['value']:.2f} IFEval {row['ifeval_prompt_strict']['value']:.3f}",
            flush=True,
        )
        if name != "base" and choose(state["rows"]) == name:
            break  # the rule picks the smallest qualifying dose: stronger ones are not needed
    state["choice"] = choose(state["rows"])
    state_file.write_text(json.dumps(state, indent=1))
    (out / "dose_pilot_results.md").write_text(report(state))
    return state


def report(state: dict) -> str:
    rows = state["rows"]
    lines = [
        "# Experiment B, dose pilot: results (protocol: `dose_pilot_protocol.md`, fixed before this run)",
        "",
        f"{len(rows['base']['items']['prompt_strict'])} pilot IFEval prompts disjoint from B's 100 test prompts; "
        "internal QA: 60 questions. One training seed; Wilson 95% intervals over items. Minutes per row (wall, shared "
        "2-core CPU): " + ", ".join(f"{k} {v:.1f}" for k, v in state["minutes"].items()) + ".",
        "",
        "| row | steps | lr | internal QA | IFEval prompt strict (pilot prompts) |",
        "|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        steps, lr = DOSES.get(name, ("-", "-"))
        qa, ifeval = row["internal_qa"], row["ifeval_prompt_strict"]
        lines.append(
            f"| {'**' + name + '**' if name == state.get('choice') else name} | {steps} | {lr} | "
            f"{100 * qa['value']:.1f}% [{100 * qa['ci'][0]:.1f}, {100 * qa['ci'][1]:.1f}] | "
            f"{100 * ifeval['value']:.1f}% [{100 * ifeval['ci'][0]:.1f}, {100 * ifeval['ci'][1]:.1f}] |"
        )
    choice = state.get("choice")
    lines += [
        "",
        f"Rule: the smallest dose at least {100 * DROP:.0f} points below the base. "
        + (f"**Choice: {choice}** {DOSES[choice]}." if choice else "**No dose qualifies.**"),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
