"""CoE step 6: which experts each generated token used (PNG + HTML), expert usage per category, resources."""

from __future__ import annotations

import html
import itertools
from pathlib import Path

import torch
from torch import nn

from mentor.coe.routing import RouterLogitsRecorder


@torch.no_grad()
def routing_trace(model: nn.Module, tokenizer, prompt: str, max_new_tokens: int = 32) -> dict:
    """Greedy answer to ``prompt`` and, per layer, the top-k experts each completion token was routed to."""
    model.eval()
    ids = torch.tensor([tokenizer(prompt)["input_ids"]], device=model.device)
    out = model.generate(
        input_ids=ids,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    recorder = RouterLogitsRecorder(model)
    try:
        model(input_ids=out)  # one pass over prompt + answer; each position's routing is causal, so exact
        logits = recorder.take()
    finally:
        recorder.remove()
    top_k = model.config.num_experts_per_tok
    start = ids.shape[1]
    experts = [sorted_topk(layer[start:], top_k) for layer in logits]  # [layer][token] -> tuple of experts
    tokens = [tokenizer.decode([t]) for t in out[0, start:].tolist()]
    return {"prompt": prompt, "tokens": tokens, "experts": experts}


def sorted_topk(logits: torch.Tensor, k: int) -> list[tuple[int, ...]]:
    return [tuple(sorted(row)) for row in logits.topk(k, dim=-1).indices.tolist()]


def plot_routing(
    traces: list[dict], expert_names: list[str], path: str | Path, layers: list[int] | None = None
) -> Path:
    """One panel per answer: rows are layers, columns are output tokens, colour = the expert combination."""
    from matplotlib.colors import ListedColormap

    from mentor.evaluation.plots import plt

    k = len(traces[0]["experts"][0][0]) if traces[0]["experts"][0] else 1
    combos = list(itertools.combinations(range(len(expert_names)), k))
    cmap = ListedColormap([f"C{i}" for i in range(len(combos))])
    fig, axes = plt.subplots(len(traces), 1, figsize=(10, 1.2 + 0.9 * len(traces) * 2), squeeze=False)
    for ax, trace in zip(axes[:, 0], traces):
        shown = layers if layers is not None else list(range(len(trace["experts"])))
        grid = [[combos.index(pair) for pair in trace["experts"][layer]] for layer in shown]
        ax.imshow(grid, cmap=cmap, vmin=-0.5, vmax=len(combos) - 0.5, aspect="auto")
        ax.set_xticks(range(len(trace["tokens"])), [t if t.strip() else "_" for t in trace["tokens"]], fontsize=8)
        ax.set_yticks(range(len(shown)), [f"layer {i}" for i in shown], fontsize=8)
        ax.set_title(f"{trace.get('category', '')}: {trace['prompt']}", fontsize=9, loc="left")
    handles = [plt.Rectangle((0, 0), 1, 1, color=f"C{i}") for i in range(len(combos))]
    fig.legend(
        handles,
        ["+".join(expert_names[e] for e in c) for c in combos],
        loc="lower center",
        ncol=len(combos),
        fontsize=8,
    )
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def routing_html(traces: list[dict], expert_names: list[str], path: str | Path) -> Path:
    """The same information as a page: per layer, each output token with the experts it used on hover."""
    rows = [
        "<html><head><meta charset='utf-8'><title>CoE routing</title><style>"
        "td{font-family:monospace;padding:2px 4px;text-align:center}th{text-align:left}</style></head><body>"
    ]
    k = len(traces[0]["experts"][0][0]) if traces[0]["experts"][0] else 1
    combos = list(itertools.combinations(range(len(expert_names)), k))
    palette = ["#8dd3c7", "#ffffb3", "#bebada", "#fb8072", "#80b1d3", "#fdb462", "#b3de69", "#fccde5"]
    legend = " ".join(
        f"<span style='background:{palette[i % 8]}'>{'+'.join(expert_names[e] for e in c)}</span>"
        for i, c in enumerate(combos)
    )
    rows.append(f"<p>{legend}</p>")
    for trace in traces:
        rows.append(f"<h3>{html.escape(trace.get('category', ''))}: {html.escape(trace['prompt'])}</h3><table>")
        rows.append("<tr><th></th>" + "".join(f"<td>{html.escape(t)}</td>" for t in trace["tokens"]) + "</tr>")
        for layer, pairs in enumerate(trace["experts"]):
            cells = "".join(
                f"<td style='background:{palette[combos.index(p) % 8]}' "
                f"title='{'+'.join(expert_names[e] for e in p)}'>{''.join(str(e) for e in p)}</td>"
                for p in pairs
            )
            rows.append(f"<tr><th>layer {layer}</th>{cells}</tr>")
        rows.append("</table>")
    rows.append("</body></html>")
    path = Path(path)
    path.write_text("\n".join(rows), encoding="utf-8")
    return path


def expert_usage(traces: list[dict], num_experts: int) -> dict[str, list[float]]:
    """Per category: the fraction of (token, layer) routings that include each expert."""
    usage: dict[str, list[float]] = {}
    for category in sorted({t.get("category", "") for t in traces}):
        counts, total = [0] * num_experts, 0
        for trace in (t for t in traces if t.get("category", "") == category):
            for layer in trace["experts"]:
                for pair in layer:
                    total += 1
                    for e in pair:
                        counts[e] += 1
        usage[category] = [c / max(total, 1) for c in counts]
    return usage


def resource_row(stage: str, model: nn.Module) -> dict:
    """Parameters, trainable parameters and the training-state memory they imply (weights, grads, AdamW moments).

    On CUDA the measured peak allocation is added; on a CPU there is no allocator counter to read, so the
    table reports the analytic training-state size instead of pretending to a measurement.
    """
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    bytes_per = next(model.parameters()).element_size()
    row = {
        "stage": stage,
        "params": total,
        "trainable": trainable,
        "train_state_mib": (total * bytes_per + trainable * (bytes_per + 8)) / 2**20,
    }
    if torch.cuda.is_available():
        row["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return row
