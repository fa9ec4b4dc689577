"""Experiment B v4 (issue 20): does a self-distillation budget the size of the mid-training recover IFEval?

The protocol is ``protocol_v4.md`` beside this file, fixed before the first run. From v3's 70/30 mid-trained model
(``--start``), OPD with the base (the original GGUF) as the frozen teacher for 60 steps at 1e-4; the base, the
start and the checkpoints at 20, 40 and 60 steps are evaluated with experiment B's own ``_evaluate_row`` (the
100 IFEval test prompts, the 60 internal questions). Each stage is saved in ``state.json`` as it finishes;
running the same command again skips the finished ones.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python -m experiments.continual.recovery --quiet  # ~40 min
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

from experiments.continual import run as continual
from experiments.continual.run import RealScale

HERE = Path(__file__).resolve().parent
V3_START = Path("runs/continual_v3/mid_70/final")
FULL = replace(continual.FULL, self_distill_steps=60, distill_lr=1e-4)
QUICK = replace(continual.QUICK, self_distill_steps=4, distill_lr=1e-4)
BASE, START = "base", "start: v3's 70/30 mid-trained model"


def checkpoints(scale: RealScale) -> tuple[int, ...]:
    """The evaluated steps: thirds of the budget (20, 40, 60 at full size)."""
    third = max(1, scale.self_distill_steps // 3)
    return tuple(range(third, scale.self_distill_steps + 1, third))


def distill_prompts(tokenizer, scale: RealScale) -> list[str]:
    """Generic chat prompts, seed 2, disjoint from the chat share's (seed 1), as v3 drew them."""
    from experiments.continual.chat_prompts import generic_chat_prompts

    documents = continual._document_examples(tokenizer, continual.CompanyDocs(scale.people))
    chat = generic_chat_prompts(round(len(documents) * 0.3 / 0.7), seed=1)
    return generic_chat_prompts(scale.self_distill_steps * scale.distill_prompts, seed=2, exclude=set(chat))


def self_distill(out: Path, start: Path, teacher: Path, tokenizer, scale: RealScale, quiet: bool) -> None:
    """v3's self-distillation (``continual._self_distill``) with a checkpoint at each evaluated step."""
    from mentor.config import DistillConfig
    from mentor.data.prompts import EncodedExample, Example, encode_prompt
    from mentor.recipes.distill import run_distill

    prompts = distill_prompts(tokenizer, scale)
    examples = [EncodedExample(encode_prompt(tokenizer, Example(prompt=p), True), None, p) for p in prompts]
    steps = checkpoints(scale)
    config = DistillConfig(
        student=str(start),
        teacher=str(teacher),
        prompts="(built in)",
        check=False,  # the prompts come from Python; the start-up check reads --prompts
        output_dir=str(out),
        steps=scale.self_distill_steps,
        batch_size=scale.distill_prompts,
        group_size=scale.group_size,
        max_new_tokens=scale.distill_tokens,
        temperature=1.0,
        learning_rate=scale.distill_lr,
        warmup_steps=max(1, scale.self_distill_steps // 10),
        save_every=steps[0],
        keep_checkpoints=len(steps),
        overwrite=True,
        quiet=quiet,
    )
    run_distill(config, examples=examples)


def run(
    out: Path,
    start: Path,
    quick: bool = False,
    quiet: bool = True,
    model: str | None = None,
    ifeval: str | None = None,
    **overrides,
) -> dict:
    """``overrides``: ``RealScale`` fields at other sizes (tests, trials)."""
    from mentor.errors import MentorError
    from mentor.models.loading import load_model, load_tokenizer
    from mentor.recipes.common import quiet_transformers
    from mentor.train.run_dir import load_weights

    quiet_transformers()
    if not (start / "config.json").exists():
        raise MentorError(
            f"--start {start} is not a model directory: run v3 first (`mentor bench continual --midtrain-lr 0.0003 "
            "--out runs/continual_v3`), or pass its mid_70/final"
        )
    scale = replace(QUICK if quick else FULL, **overrides)
    gguf, ifeval_path = continual.resolve_inputs(model, ifeval)
    out.mkdir(parents=True, exist_ok=True)
    state_file = out / "state.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {"items": {}, "timings": {}}
    state.update(scale=asdict(scale), quick=quick, start=str(start), protocol="protocol_v4.md")
    items, timings = state["items"], state["timings"]
    tokenizer = load_tokenizer(str(gguf))
    docs = continual.CompanyDocs(scale.people)
    ifeval_problems = continual.ifeval_subset(ifeval_path, scale.ifeval_prompts)

    def measure(label: str, load) -> None:
        if label not in items:
            with continual._timed(timings, f"evaluate {label}"):
                items[label] = continual._evaluate_row(load(), tokenizer, docs, ifeval_problems, scale)
            state_file.write_text(json.dumps(state, indent=1))

    measure(BASE, lambda: load_model(str(gguf)))
    measure(START, lambda: load_model(str(start)))
    labels = [f"+ self-distillation, {step} steps" for step in checkpoints(scale)]
    if not all(label in items for label in labels):
        if "self-distillation" not in timings:
            with continual._timed(timings, "self-distillation"):
                self_distill(out / "opd", start, gguf, tokenizer, scale, quiet)
            state_file.write_text(json.dumps(state, indent=1))
        for step, label in zip(checkpoints(scale), labels):

            def load(step: int = step):
                model = load_model(str(start))
                load_weights(model, out / "opd" / "checkpoints" / f"step_{step:08d}" / "model")
                return model

            measure(label, load)
    result = summarize(state)
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    from experiments.continual.report import write_recovery_report

    write_recovery_report(result, out)
    return result


def summarize(state: dict) -> dict:
    """Each row with its intervals; each self-distilled row against the start and against the base, paired; and
    whether the base and the start measure exactly as in v3 (greedy, so they must)."""
    items = state["items"]
    labels = [label for label in items if label not in (BASE, START)]
    changes = [continual.paired_change(items, label, against) for label in labels for against in (START, BASE)]
    return {
        **{k: state[k] for k in ("scale", "quick", "start", "protocol", "timings")},
        "rows": {label: continual.summarize(e) for label, e in items.items()},
        "changes": changes,
        "same_as_v3": same_as_v3(items),
        "items": items,
        "minutes": sum(t["wall"] for t in state["timings"].values()) / 60,
    }


def same_as_v3(items: dict) -> dict[str, bool] | None:
    """Whether the base's and the start's per-item outcomes equal v3's (None: v3's results are not beside us)."""
    v3_file = HERE / "results_v3.json"
    if not v3_file.exists():
        return None
    v3 = json.loads(v3_file.read_text())["items"]
    pairs = {BASE: "SmolLM2-135M-Instruct (base)", START: "+ midtrain, 70% docs / 30% chat"}
    return {
        ours: all(items[ours][k] == v3[theirs][k] for k in ("qa", "prompt_strict"))
        for ours, theirs in pairs.items()
        if ours in items and theirs in v3
    }


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--out", default="runs/continual_v4", help="where the run, state.json and results go")
    parser.add_argument("--start", default=str(V3_START), help="v3's 70/30 mid-trained model (its final/)")
    parser.add_argument("--quick", action="store_true", help="the same protocol at smaller sizes")
    parser.add_argument("--quiet", action="store_true", help="no per-step progress")
    parser.add_argument("--model", default=None, help="the base and teacher (default: the SmolLM2 GGUF)")
    parser.add_argument("--ifeval", default=None, help="IFEval's input_data.jsonl")
    return parser


def main(argv: list[str] | None = None) -> None:
    from mentor.errors import MentorError

    args = add_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0])).parse_args(argv)
    started = time.time()
    try:
        run(Path(args.out), Path(args.start), args.quick, args.quiet, args.model, args.ifeval)
    except MentorError as error:
        raise SystemExit(f"error: {error}") from None
    print(f"done in {(time.time() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
