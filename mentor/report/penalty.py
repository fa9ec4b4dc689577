"""What the teacher penalises: each sampled token shaded by ``log q(x_t) - log p_teacher(x_t)``.

Reads a run's ``samples.jsonl`` (mentor/report/samples.py) and writes a self-contained HTML page (no external
assets; the teacher's preferred token on hover, and under the token where the penalty is large) and a PNG
of the same for papers and issues. The summary says where the penalty concentrates: the share of the
positive penalty carried by the top 1% and 10% of tokens, and the tokens that most often carry it (the
"forking" tokens), for the whole run and per logged step.
"""

from __future__ import annotations

import html
import json
import math
from collections import Counter, defaultdict
from pathlib import Path

from mentor.errors import MentorError
from mentor.report.samples import SAMPLES_FILE, SampleLog, own_entries

# tokens whose penalty is at least this share of the colour scale show the teacher's choice under them
ANNOTATE_FROM = 0.5


# --- numbers ---------------------------------------------------------------------------------------
def token_penalties(record: dict) -> list[float | None]:
    """Per token: sampler log-prob minus teacher log-prob; None where there is no teacher log-prob or the
    token was not trained on."""
    teacher = record.get("teacher_logprobs")
    if teacher is None:
        return [None] * len(record["tokens"])
    trained = record.get("trained") or [1] * len(record["tokens"])
    return [q - p if keep else None for q, p, keep in zip(record["sampler_logprobs"], teacher, trained)]


def sequence_reverse_kl(record: dict) -> float | None:
    """The sequence's mean per-token penalty (its sampled reverse-KL estimate)."""
    values = [v for v in token_penalties(record) if v is not None]
    return sum(values) / len(values) if values else None


def concentration(penalties: list[float], fractions: tuple[float, ...] = (0.01, 0.10)) -> dict[str, float]:
    """The share of the total positive penalty carried by the top ``fraction`` of tokens (at least one token).

    The positive part is the mass that pushes tokens down; negative penalties (tokens the teacher likes
    more than the student) are counted as 0, so the shares lie in [0, 1]."""
    positive = sorted((max(v, 0.0) for v in penalties), reverse=True)
    total = sum(positive)
    out = {}
    for fraction in fractions:
        k = max(1, math.ceil(fraction * len(positive))) if positive else 0
        out[f"top_{fraction * 100:g}%"] = (sum(positive[:k]) / total) if total > 0 else 0.0
    return out


def forking_tokens(records: list[dict], top_fraction: float = 0.10, limit: int = 10) -> list[dict]:
    """The tokens that most often fall in the top ``top_fraction`` of penalties: token text, how many times,
    their mean penalty and how often the teacher would have written something else."""
    flat = [
        (pen, rec["tokens"][t], rec.get("teacher_top1", [None] * len(rec["tokens"]))[t])
        for rec in records
        for t, pen in enumerate(token_penalties(rec))
        if pen is not None
    ]
    if not flat:
        return []
    k = max(1, math.ceil(top_fraction * len(flat)))
    top = sorted(flat, key=lambda x: -x[0])[:k]
    counts: Counter = Counter(tok for _, tok, _ in top)
    sums: dict[str, float] = defaultdict(float)
    preferred: dict[str, Counter] = defaultdict(Counter)
    for pen, tok, best in top:
        sums[tok] += pen
        if best is not None:
            preferred[tok][best] += 1
    rows = []
    for tok, n in sorted(counts.items(), key=lambda kv: (-kv[1], -sums[kv[0]], kv[0]))[:limit]:
        row = {"token": tok, "count": n, "mean_penalty": sums[tok] / n}
        if preferred[tok]:
            row["teacher_prefers"] = preferred[tok].most_common(1)[0][0]
        rows.append(row)
    return rows


def penalty_summary(records: list[dict]) -> dict:
    """Concentration and forking tokens for the whole run and for each logged step."""

    def block(recs):
        values = [v for r in recs for v in token_penalties(r) if v is not None]
        return {
            "tokens": len(values),
            "mean_penalty": sum(values) / len(values) if values else None,
            **concentration(values),
            "forking_tokens": forking_tokens(recs),
        }

    steps = sorted({r["step"] for r in records})
    return {"run": block(records), "steps": {str(s): block([r for r in records if r["step"] == s]) for s in steps}}


# --- choosing what to show -------------------------------------------------------------------------
def load_samples(run: str | Path) -> list[dict]:
    run = Path(run)
    if not run.is_dir():
        raise MentorError(f"{run} is not a run directory: pass the --output-dir of a mentor run")
    log = SampleLog(run)
    records = log.read_strict()  # a damaged file is named with its line, not taken for a missing one
    if not records and log.path.is_file():
        raise MentorError(
            f"{log.path} holds no sample records (JSON objects with `tokens`): pass the "
            "--output-dir of a mentor run, whose samples.jsonl training wrote"
        )
    if not records:
        raise MentorError(
            f"{run} has no {SAMPLES_FILE}: runs log samples every --sample-log-every steps "
            "(SFT runs have none); train with --sample-log-every N (N > 0)"
        )
    return records


def parse_steps(text: str | None, available: list[int]) -> list[int]:
    """``last`` (default), ``all``, or a comma list of steps (each must have been logged)."""
    if not text or text == "last":
        return available[-1:]
    if text == "all":
        return available
    try:
        wanted = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise MentorError(f"--steps {text!r}: use last, all, or a comma list of step numbers") from None
    missing = [s for s in wanted if s not in available]
    if missing:
        shown = ", ".join(map(str, available[:12])) + (", ..." if len(available) > 12 else "")
        raise MentorError(f"--steps: step {missing[0]} was not logged (logged steps: {shown})")
    return wanted


def select(
    records: list[dict],
    steps: str | None = None,
    prompts: str | None = None,
    index: str | None = None,
    worst: int = 0,
    best: int = 0,
) -> list[dict]:
    """The records to show: at ``steps`` (``--worst``/``--best`` alone search every step), whose prompt contains
    ``prompts``, the ``index``-th of each step, then the N with the highest / lowest mean penalty."""
    if worst < 0 or best < 0:
        raise MentorError("--worst and --best count sequences: use 0 or more")
    available = sorted({r["step"] for r in records})
    chosen_steps = parse_steps(steps if steps or not (worst or best) else "all", available)
    out = [r for r in records if r["step"] in chosen_steps]
    if prompts:
        out = [r for r in out if prompts.lower() in str(r.get("prompt", "")).lower()]
        if not out:
            raise MentorError(f"--prompts {prompts!r}: no logged prompt at the chosen steps contains it")
    if index:
        try:
            wanted = {int(part) for part in index.split(",") if part.strip()}
        except ValueError:
            raise MentorError(f"--index {index!r}: use a comma list of numbers (0 = first logged sequence)") from None
        by_step: dict[int, list[dict]] = defaultdict(list)
        for r in out:
            by_step[r["step"]].append(r)
        out = [r for step in sorted(by_step) for i, r in enumerate(by_step[step]) if i in wanted]
        if not out:
            raise MentorError(
                f"--index {index}: no logged sequence has that index (steps log "
                f"{max(len(v) for v in by_step.values()) if by_step else 0})"
            )
    if worst or best:
        scored = [r for r in out if sequence_reverse_kl(r) is not None]
        if not scored:
            raise MentorError("--worst/--best need teacher log-probs, and these samples have none (not an OPD run)")
        ranked = sorted(scored, key=lambda r: -sequence_reverse_kl(r))
        out = ranked[:worst] + [r for r in ranked[::-1][:best] if r not in ranked[:worst]]
    return out


# --- colours ---------------------------------------------------------------------------------------
def colour_scale(records: list[dict]) -> float:
    """The penalty (nats) that gets the strongest colour: the 99th percentile of |penalty|, at least 1."""
    values = sorted(abs(v) for r in records for v in token_penalties(r) if v is not None)
    if not values:
        return 1.0
    return max(1.0, values[min(len(values) - 1, int(0.99 * len(values)))])


def shade(penalty: float | None, scale: float) -> tuple[float, float, float]:
    """White at 0, red for a penalised token (student likes it more than the teacher), blue the other way."""
    if penalty is None:
        return (1.0, 1.0, 1.0)
    x = max(-1.0, min(1.0, penalty / scale))
    if x >= 0:
        return (1.0, 1.0 - 0.75 * x, 1.0 - 0.75 * x)
    return (1.0 + 0.6 * x, 1.0 + 0.35 * x, 1.0)


def _css(rgb: tuple[float, float, float]) -> str:
    return "#" + "".join(f"{round(255 * c):02x}" for c in rgb)


def _visible(token: str) -> str:
    return token.replace("\n", "\u21b5\n").replace("\t", "\u2192")


# --- HTML ------------------------------------------------------------------------------------------
STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;max-width:1100px;color:#222}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}
.seq{border:1px solid #ddd;border-radius:6px;padding:10px 14px;margin:14px 0}
.meta{font-size:12px;color:#555;margin-bottom:6px}
.prompt{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;color:#666;white-space:pre-wrap;
 background:#f7f7f7;padding:6px;border-radius:4px;margin-bottom:8px;max-height:9em;overflow:auto}
.text{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:14px;line-height:2.3;white-space:pre-wrap;
 word-break:break-word}
.t{border-radius:2px;position:relative;cursor:default}
.t:hover{outline:1px solid #333}
ruby{ruby-position:under}rt{font-size:10px;color:#7a0000;font-family:ui-monospace,Menlo,Consolas,monospace}
.tip{display:none;position:absolute;left:0;top:1.6em;z-index:5;background:#222;color:#fff;font-size:11px;
 line-height:1.4;padding:4px 6px;border-radius:4px;white-space:pre}
.t:hover .tip{display:block}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
.legend{display:inline-block;width:260px;height:12px;vertical-align:middle;border:1px solid #ccc;
 background:linear-gradient(to right,#6697ff,#ffffff,#ff4040)}
code{background:#f2f2f2;padding:0 3px}
"""


def _tip(q: float, p: float | None, penalty: float | None, preferred: str | None) -> str:
    lines = [f"log q (student) {q:.3f}"]
    if p is not None:
        lines.append(f"log p (teacher) {p:.3f}")
    if penalty is not None:
        lines.append(f"penalty {penalty:+.3f} nats")
    if preferred is not None:
        lines.append(f"teacher's choice {json.dumps(preferred, ensure_ascii=False)}")
    return "\n".join(lines)


def _tokens_html(record: dict, scale: float) -> str:
    penalties = token_penalties(record)
    teacher = record.get("teacher_logprobs") or [None] * len(record["tokens"])
    preferred = record.get("teacher_top1") or [None] * len(record["tokens"])
    parts = []
    for token, q, p, pen, best in zip(record["tokens"], record["sampler_logprobs"], teacher, penalties, preferred):
        tip = html.escape(_tip(q, p, pen, best))
        text = html.escape(_visible(token)) or "&#8203;"
        if best is not None and best != token and pen is not None and pen >= ANNOTATE_FROM * scale:
            text = f"<ruby>{text}<rt>{html.escape(_visible(best).strip() or repr(best))}</rt></ruby>"
        parts.append(
            f"<span class='t' style='background:{_css(shade(pen, scale))}'>{text}<span class='tip'>{tip}</span></span>"
        )
    return "".join(parts)


def _summary_html(summary: dict) -> str:
    def shares(block):
        def pct(key):
            return f"{100 * block[key]:.0f}%" if block["tokens"] else "-"

        mean = f"{block['mean_penalty']:.3f}" if block["mean_penalty"] is not None else "-"
        return f"<td>{block['tokens']}</td><td>{mean}</td><td>{pct('top_1%')}</td><td>{pct('top_10%')}</td>"

    def forks(block):
        return ", ".join(
            f"<code>{html.escape(json.dumps(f['token'], ensure_ascii=False))}</code>&times;{f['count']}"
            for f in block["forking_tokens"][:6]
        )

    rows = [f"<tr><th>whole run</th>{shares(summary['run'])}<td>{forks(summary['run'])}</td></tr>"]
    rows += [f"<tr><td>step {s}</td>{shares(b)}<td>{forks(b)}</td></tr>" for s, b in summary["steps"].items()]
    return (
        "<table><tr><th></th><th>tokens</th><th>mean penalty (nats)</th><th>top 1% carry</th>"
        "<th>top 10% carry</th><th>forking tokens (most often in the top 10%)</th></tr>" + "".join(rows) + "</table>"
    )


def render_html(shown: list[dict], summary: dict, path: str | Path, title: str) -> Path:
    scale = colour_scale(shown)
    has_teacher = any(r.get("teacher_logprobs") is not None for r in shown)
    blocks = []
    for r in shown:
        kl = sequence_reverse_kl(r)
        meta = [f"step {r['step']}", f"row {r['row']}", f"{len(r['tokens'])} tokens"]
        if kl is not None:
            meta.append(f"mean penalty (reverse KL) {kl:.3f} nats")
        if r.get("reward") is not None:
            meta.append(f"reward {r['reward']:.3g}")
        if r.get("truncated"):
            meta.append("cut at max_new_tokens")
        blocks.append(
            f"<div class='seq'><div class='meta'>{' &middot; '.join(meta)}</div>"
            f"<div class='prompt'>{html.escape(str(r.get('prompt', '')))}</div>"
            f"<div class='text'>{_tokens_html(r, scale)}</div></div>"
        )
    explain = (
        f"Each token of the student's completion is shaded by its penalty <code>log q(x) - log p_teacher(x)"
        f"</code>: -{scale:.2f} <span class='legend'></span> +{scale:.2f} nats; red where the teacher would "
        "rarely write the token, blue where it likes it more than the student. Hover a token for its numbers; "
        "under a strongly penalised token is the teacher's own choice there, where the run recorded it."
        if has_teacher
        else "These samples have no teacher log-probs (not an OPD run): hover a token for its sampler log-prob."
    )
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1><p>{explain}</p>"
        f"<h2>Where the penalty concentrates</h2><p>Share of the positive penalty carried by the most "
        f"penalised tokens, over every logged sample.</p>{_summary_html(summary)}"
        f"<h2>Completions</h2>{''.join(blocks)}</body></html>\n"
    )
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path


# --- PNG -------------------------------------------------------------------------------------------
def _wrap(tokens: list[str], width: int) -> list[list[tuple[int, str]]]:
    """Token pieces laid out in lines of at most ``width`` characters (a newline token ends a line)."""
    lines: list[list[tuple[int, str]]] = [[]]
    used = 0
    for i, token in enumerate(tokens):
        pieces = token.split("\n")
        for j, piece in enumerate(pieces):
            if j > 0:
                lines[-1].append((i, "\u21b5"))
                lines.append([])
                used = 0
            while piece:
                room = width - used
                if room <= 0 or (len(piece) > room and used > 0 and len(piece) <= width):
                    lines.append([])
                    used, room = 0, width
                chunk, piece = piece[:room], piece[room:]
                lines[-1].append((i, chunk))
                used += len(chunk)
    return [line for line in lines if line] or [[]]


def render_png(
    shown: list[dict], path: str | Path, title: str, width: int = 84, max_sequences: int = 6, max_lines: int = 14
) -> Path:
    from matplotlib.colors import LinearSegmentedColormap
    from matplotlib.patches import Rectangle

    from mentor.evaluation.plots import plt

    shown = shown[:max_sequences]
    scale = colour_scale(shown)
    layouts = []
    for r in shown:
        lines = _wrap([t.replace("\t", " ") for t in r["tokens"]], width)
        cut = len(lines) > max_lines
        layouts.append((r, lines[:max_lines], cut))
    font = 10.0  # points; DejaVu Sans Mono advances 0.602 em per character
    char_w, line_h = font * 0.602 / 72, 0.42  # inches: one character, the line pitch (room for the choice below)
    heights = [0.5 + line_h * (len(lines) + (1 if cut else 0)) + 0.15 for _, lines, cut in layouts]
    fig_w = width * char_w + 0.6
    fig_h = sum(heights) + 0.9
    fig = plt.figure(figsize=(fig_w, fig_h))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, fig_w)
    ax.set_ylim(fig_h, 0)
    ax.axis("off")
    ax.text(0.3, 0.35, title, fontsize=11, weight="bold", va="center")
    cmap = LinearSegmentedColormap.from_list("penalty", [shade(-scale, scale), (1, 1, 1), shade(scale, scale)])
    bar = fig.add_axes((0.62, 1 - 0.62 / fig_h, 0.3, 0.12 / fig_h))
    bar.imshow([[i / 99 for i in range(100)]], cmap=cmap, aspect="auto", extent=(-scale, scale, 0, 1))
    bar.set_yticks([])
    bar.tick_params(labelsize=7, length=2, pad=1)
    bar.set_title("penalty  log q - log p_teacher  (nats)", fontsize=7, pad=2)
    y = 0.9
    for (r, lines, cut), height in zip(layouts, heights):
        penalties = token_penalties(r)
        preferred = r.get("teacher_top1")
        kl = sequence_reverse_kl(r)
        prompt = " ".join(str(r.get("prompt", "")).split())
        prompt = prompt if len(prompt) <= width - 30 else "..." + prompt[-(width - 33) :]
        head = f"step {r['step']}" + (f" · mean penalty {kl:.2f}" if kl is not None else "") + f" · {prompt}"
        ax.text(0.3, y + 0.18, head, fontsize=8, color="#444", va="center", family="DejaVu Sans Mono")
        row_y = y + 0.5
        annotated: set[int] = set()  # the teacher's choice goes under a token's first piece only
        for line in lines:
            x = 0.3
            for i, piece in line:
                pen = penalties[i]
                ax.add_patch(
                    Rectangle(
                        (x, row_y - 0.11), len(piece) * char_w, 0.22, facecolor=shade(pen, scale), edgecolor="none"
                    )
                )
                ax.text(x, row_y, piece, fontsize=font, family="DejaVu Sans Mono", va="center", ha="left")
                best = preferred[i] if preferred else None
                if (
                    best is not None
                    and pen is not None
                    and pen >= ANNOTATE_FROM * scale
                    and best != r["tokens"][i]
                    and i not in annotated
                ):
                    annotated.add(i)
                    indent = (len(piece) - len(piece.lstrip())) * char_w  # under the word, not its space
                    ax.text(
                        x + indent,
                        row_y + 0.21,
                        (best.strip() or repr(best))[:12],
                        fontsize=6.5,
                        color="#8b0000",
                        family="DejaVu Sans Mono",
                        va="center",
                        ha="left",
                    )
                x += len(piece) * char_w
            row_y += line_h
        if cut:
            ax.text(
                0.3, row_y, "... (cut; the HTML page has the whole completion)", fontsize=6.5, color="#777", va="center"
            )
        y += height
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --- the command -----------------------------------------------------------------------------------
def inspect_run(
    run: str | Path,
    out: str | Path | None = None,
    steps: str | None = None,
    prompts: str | None = None,
    index: str | None = None,
    worst: int = 0,
    best: int = 0,
) -> dict:
    """``mentor inspect RUN``: penalty.html, penalty.png and penalty_summary.json in ``out`` (RUN/inspect)."""
    from mentor.train.run_dir import RunDirectory

    run = Path(run)
    records = load_samples(run)
    shown = select(records, steps, prompts, index, worst, best)
    if not shown:
        raise MentorError("nothing to show: no logged sequence matches the chosen steps and prompts")
    if out is None:
        own_entries(RunDirectory(run), "inspect")
        out = run / "inspect"
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise MentorError(f"--out {out} is a file: choose a directory")
    out.mkdir(parents=True, exist_ok=True)
    summary = penalty_summary(records)
    title = f"What the teacher penalises: {run.resolve().name}"
    files = {
        "html": str(render_html(shown, summary, out / "penalty.html", title)),
        "png": str(render_png(shown, out / "penalty.png", title)),
    }
    (out / "penalty_summary.json").write_text(
        json.dumps(summary, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    files["summary"] = str(out / "penalty_summary.json")
    return {"files": files, "summary": summary, "shown": len(shown)}


def summary_lines(summary: dict, steps: int = 6) -> list[str]:
    """The concentration summary as plain text (what ``mentor inspect`` prints)."""

    def line(name, block):
        if not block["tokens"]:
            return f"{name}: no teacher log-probs"
        forks = ", ".join(
            f"{json.dumps(f['token'], ensure_ascii=False)}x{f['count']}" for f in block["forking_tokens"][:5]
        )
        return (
            f"{name}: {block['tokens']} tokens, mean penalty {block['mean_penalty']:.3f} nats; top 1% carry "
            f"{100 * block['top_1%']:.0f}%, top 10% carry {100 * block['top_10%']:.0f}%; forking tokens: {forks}"
        )

    out = [line("run", summary["run"])]
    keys = list(summary["steps"])
    if len(keys) > steps:  # the first and the last logged steps
        keys = keys[: steps // 2] + keys[-(steps - steps // 2) :]
    for key in keys:
        out.append(line(f"step {key}", summary["steps"][key]))
    return out
