"""Follow-up 1 (``protocol_top_k.md``): v1's P with ``--divergence top_k --kl-top-k 20``, on the same items.

Reads v1's full run (``--out``, default ``runs/privileged_context``) for the rows it compares with, trains and
measures the new row there (``privileged_top_k``), and writes ``top_k_results.md``/``.json`` beside this file.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python -m experiments.privileged_context.top_k --quiet  # ~25 min
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROW = "P-top-k: OPD over the teacher's top 20, teacher self reading the memo"
TOP_K = 20


def run(
    out: Path, results_dir: Path, quiet: bool = True, model: str | None = None, ifeval: str | None = None, **overrides
) -> dict:
    from experiments.continual import run as continual
    from experiments.continual.report import change_rows, with_interval
    from experiments.privileged_context import run as v1
    from experiments.privileged_context.diagnose import answer_logprobs
    from mentor.errors import MentorError
    from mentor.evaluation.tables import markdown_table
    from mentor.models.loading import load_model, load_tokenizer
    from mentor.recipes.common import quiet_transformers
    from mentor.recipes.distill import run_distill

    quiet_transformers()
    state_file = out / "state.json"
    if not state_file.exists():
        raise MentorError(f"{state_file} not found: run v1 first (`mentor bench privileged --out {out}`)")
    state = json.loads(state_file.read_text())
    scale = replace(v1.QUICK if state["quick"] else v1.FULL, **overrides)
    model_path, ifeval_path = continual.resolve_inputs(model, ifeval)
    tokenizer = load_tokenizer(str(model_path))
    docs = continual.CompanyDocs(scale.people)
    items, timings = state["items"], state["timings"]
    run_dir = out / "privileged_top_k"
    if ROW not in items and not (run_dir / "final").exists():
        config = replace(v1.distill_config(run_dir, model_path, scale, quiet), divergence="top_k", kl_top_k=TOP_K)
        examples = v1.encode_records(tokenizer, v1.question_records(docs, with_context=True))
        with continual._timed(timings, "train privileged_top_k"):
            run_distill(config, tokenizer=tokenizer, examples=examples)
    trained = load_model(str(run_dir / "final")).eval()  # evaluated (once) and diagnosed
    if ROW not in items:
        ifeval_problems = continual.ifeval_subset(ifeval_path, scale.ifeval_prompts)
        with continual._timed(timings, f"evaluate {ROW}"):
            items[ROW] = continual._evaluate_row(trained, tokenizer, docs, ifeval_problems, scale)
        state_file.write_text(json.dumps(state, indent=1))
    questions = docs.test_problems()
    logprobs = answer_logprobs(
        trained,
        tokenizer,
        [p.prompt for p in questions],
        [continual.CompanyDocs.chat_answer(p) for p in questions],
    )
    against = [v1.PRIVILEGED, v1.BASE, v1.MID_100]
    changes = [continual.paired_change(items, ROW, other) for other in against]
    rows = {label: continual.summarize(items[label]) for label in [v1.BASE, v1.MID_100, v1.PRIVILEGED, ROW]}
    result = {
        "protocol": "experiments/privileged_context/protocol_top_k.md",
        "rows": rows,
        "changes": changes,
        "answer_logprob_student_prompt": sum(logprobs) / len(logprobs),
        "costs": v1.run_costs(run_dir),
        "seconds": {k: v for k, v in timings.items() if "top_k" in k or k.endswith(ROW)},
        "items": {ROW: items[ROW]},
    }
    (results_dir / "top_k_results.json").write_text(json.dumps(result, indent=1) + "\n")
    table = [
        [label] + [with_interval(r[key]) for key in ("internal_qa", "ifeval_prompt_strict")]
        for label, r in rows.items()
    ]
    minutes = sum(v["wall"] for v in result["seconds"].values()) / 60
    text = [
        "# Privileged context, follow-up 1: P with the teacher's top 20",
        "",
        f"Protocol: [protocol_top_k.md](protocol_top_k.md), written before this run. {minutes:.1f} min wall. One seed.",
        "",
        markdown_table(["row", "internal QA", "IFEval prompt strict"], table),
        "",
        markdown_table(["change (paired, same items)", "internal QA", "IFEval prompt strict"], change_rows(changes)),
        "",
        f"Log-prob per token of the reference answers after the student's prompt: {result['answer_logprob_student_prompt']:.2f}"
        " (v1's diagnostic: base -4.39, P -3.09, midtrain 100% -0.60, the teacher with the memo -0.62).",
        "",
        f"Cost: {result['costs']['teacher_tokens']:,.0f} teacher tokens, {result['costs']['sampled_tokens']:,.0f} sampled, "
        f"{100 * result['costs']['truncated_fraction']:.0f}% cut at {scale.distill_tokens} tokens.",
        "",
    ]
    (results_dir / "top_k_results.md").write_text("\n".join(text))
    return result


def main(argv: list[str] | None = None) -> None:
    from mentor.errors import MentorError

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/privileged_context", help="v1's full run (its --out)")
    parser.add_argument("--results", default=str(HERE), help="where top_k_results.md/.json go")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--model", default=None)
    parser.add_argument("--ifeval", default=None)
    args = parser.parse_args(argv)
    try:
        run(Path(args.out), Path(args.results), args.quiet, args.model, args.ifeval)
    except MentorError as error:
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    main()
