"""``mentor inspect RUN`` (the per-token penalty view) and ``mentor report RUN`` (summary.md and plots)."""

from __future__ import annotations


def _inspect(args) -> None:
    from mentor.report.penalty import inspect_run, summary_lines

    result = inspect_run(
        args.run,
        out=args.out,
        steps=args.steps,
        prompts=args.prompts,
        index=args.index,
        worst=args.worst,
        best=args.best,
    )
    for line in summary_lines(result["summary"]):
        print(line)
    print(f"{result['shown']} sequences: {result['files']['html']} and {result['files']['png']}")


def _report(args) -> None:
    from mentor.report.run_report import write_report

    files = write_report(args.run, out=args.out)
    print("wrote " + ", ".join(files.values()))


def add_report_parsers(sub) -> None:
    inspect = sub.add_parser("inspect", help="the teacher's per-token penalty on a run's logged samples (HTML + PNG)")
    inspect.add_argument("run", help="run directory (its samples.jsonl)")
    inspect.add_argument("--steps", default=None, help="last (default), all, or a comma list of logged steps")
    inspect.add_argument("--prompts", default=None, metavar="TEXT", help="only prompts that contain TEXT")
    inspect.add_argument(
        "--index", default=None, metavar="I,J", help="only the I-th, J-th logged sequence of each step (0 = first)"
    )
    inspect.add_argument(
        "--worst",
        type=int,
        default=0,
        metavar="N",
        help="the N sequences with the highest mean penalty (reverse KL); all steps unless --steps",
    )
    inspect.add_argument("--best", type=int, default=0, metavar="N", help="the N with the lowest")
    inspect.add_argument("--out", default=None, metavar="DIR", help="where penalty.html/.png go (default RUN/inspect)")
    inspect.set_defaults(func=_inspect)

    report = sub.add_parser("report", help="a run's summary.md and plots (reverse KL, accuracy, entropy, ...)")
    report.add_argument("run", help="run directory (or a CoE directory)")
    report.add_argument(
        "--out", default=None, metavar="DIR", help="write summary.md and report/ here instead of into the run directory"
    )
    report.set_defaults(func=_report)
