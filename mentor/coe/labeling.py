"""CoE step 1: give every SFT record one category, write one JSONL per category and a summary.

Labelers are callables ``prompt text -> category``:
- ``FieldLabeler``: the record already has a ``category`` field (pass-through).
- ``KeywordLabeler``: ordered regex rules, first match wins, else the default category.
- ``LLMLabeler``: asks a model with a classification prompt and parses the first category name in the
  answer; the model is a local transformers model or an OpenAI-compatible ``/v1/chat/completions`` URL.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from mentor.errors import MentorError
from mentor.files import is_url

DEFAULT_CATEGORIES = ("general", "math", "coding")
DEFAULT_RULES = {
    "coding": [
        r"print\(",
        r"\bdef\b",
        r"\breturn\b",
        r"```",
        r"\bcode\b",
        r"\bpython\b",
        r"\bfunction\b",
        r"^\s*[a-z]\w*\s*=\s*[\w(]",
    ],
    "math": [r"\d+\s*[-+*/^]\s*\d+", r"\bsolve\b", r"\bequation\b", r"\bhow many\b", r"\bcalculate\b", r"\bsum of\b"],
}
CLASSIFY_PROMPT = (
    "Classify the user request below into exactly one category: {categories}.\n"
    "Answer with the category name only.\n\nRequest:\n{text}\n\nCategory:"
)


def record_text(record: dict) -> str:
    """The user side of a record: ``prompt``, or the user turns of ``messages``."""
    if "prompt" in record:
        return str(record["prompt"])
    if "messages" in record:
        return "\n".join(m["content"] for m in record["messages"] if m.get("role") == "user")
    raise MentorError("a record needs a 'prompt' or 'messages' field to be labelled")


class FieldLabeler:
    def __init__(self, categories=DEFAULT_CATEGORIES):
        self.categories = tuple(categories)

    def label_record(self, record: dict) -> str:
        category = record.get("category")
        if category not in self.categories:
            raise MentorError(
                f"record has category {category!r}, not one of {', '.join(self.categories)}: "
                "fix the data or use --labeler keyword|llm"
            )
        return category


class KeywordLabeler:
    def __init__(
        self, rules: dict[str, list[str]] | None = None, default: str = "general", categories=DEFAULT_CATEGORIES
    ):
        self.rules = [
            (cat, re.compile(p, re.IGNORECASE | re.MULTILINE))
            for cat, patterns in (rules or DEFAULT_RULES).items()
            for p in patterns
        ]
        self.default, self.categories = default, tuple(categories)

    def __call__(self, text: str) -> str:
        return next((cat for cat, pattern in self.rules if pattern.search(text)), self.default)

    def label_record(self, record: dict) -> str:
        return self(record_text(record))


def parse_category(answer: str, categories, default: str) -> str:
    """The earliest category name in the answer (``"Math."`` -> math); the default if none appears."""
    found = [(m.start(), c) for c in categories for m in [re.search(rf"\b{re.escape(c)}\b", answer, re.I)] if m]
    return min(found)[1] if found else default


class LLMLabeler:
    """Classification by a model: ``complete`` maps a prompt to the model's answer text."""

    def __init__(self, complete: Callable[[str], str], categories=DEFAULT_CATEGORIES, default: str = "general"):
        self.complete, self.categories, self.default = complete, tuple(categories), default

    def __call__(self, text: str) -> str:
        prompt = CLASSIFY_PROMPT.format(categories=", ".join(self.categories), text=text)
        return parse_category(self.complete(prompt), self.categories, self.default)

    def label_record(self, record: dict) -> str:
        return self(record_text(record))


def http_chat_completer(
    url: str, model: str = "", api_key: str = "", timeout: float = 60.0, max_tokens: int = 8
) -> Callable[[str], str]:
    """An OpenAI-compatible chat endpoint (vLLM, SGLang, OpenAI): ``url`` is the server root or the full path."""
    endpoint = url.rstrip("/")
    if not endpoint.endswith("/chat/completions"):
        endpoint += "/chat/completions" if endpoint.endswith("/v1") else "/v1/chat/completions"
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {api_key}"} if api_key else {})}

    def complete(prompt: str) -> str:
        body = json.dumps(
            {
                "model": model,
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": max_tokens,
                "temperature": 0.0,
            }
        ).encode()
        request = urllib.request.Request(endpoint, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                payload = json.loads(response.read())
        except (urllib.error.URLError, OSError) as exc:
            raise MentorError(f"labeler endpoint {endpoint} failed: {exc}") from None
        try:
            return payload["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise MentorError(f"labeler endpoint {endpoint} returned no chat completion") from None

    return complete


def local_completer(model_path: str, max_new_tokens: int = 8) -> Callable[[str], str]:
    """Greedy answers of a local transformers model (chat template if the tokenizer has one)."""
    import torch

    from mentor.models.loading import load_model, load_tokenizer

    tokenizer, model = load_tokenizer(model_path, "labeler"), load_model(model_path, what="labeler").eval()

    @torch.no_grad()
    def complete(prompt: str) -> str:
        if getattr(tokenizer, "chat_template", None):
            ids = tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
            )["input_ids"]
        else:
            ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)

    return complete


def make_labeler(kind: str, categories=DEFAULT_CATEGORIES, model: str = "", api_key: str = ""):
    if kind == "field":
        return FieldLabeler(categories)
    if kind == "keyword":
        return KeywordLabeler(categories=categories, default=categories[0])
    if kind == "llm":
        if not model:
            raise MentorError("--labeler llm needs --labeler-model (a local model or an http(s):// endpoint)")
        url, _, name = model.partition("#")  # http://host:8000#model-name
        complete = http_chat_completer(url, name, api_key) if is_url(model) else local_completer(model)
        return LLMLabeler(complete, categories, default=categories[0])
    raise MentorError(f"--labeler {kind!r} is unknown: use field, keyword or llm")


def label_records(records: list[dict], labeler, out_dir: str | Path, categories=DEFAULT_CATEGORIES) -> dict:
    """Write ``out_dir/<category>.jsonl`` (records with their ``category``), ``labels.json`` and ``labels.png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    by_category: dict[str, list[dict]] = {c: [] for c in categories}
    flows: Counter = Counter()
    for record in records:
        category = labeler.label_record(record)
        by_category[category].append({**record, "category": category})
        flows[(str(record.get("source", "data")), category)] += 1
    for category, rows in by_category.items():
        (out / f"{category}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    counts = {c: len(rows) for c, rows in by_category.items()}
    summary = {"counts": counts, "flows": [{"source": s, "category": c, "count": n} for (s, c), n in flows.items()]}
    (out / "labels.json").write_text(json.dumps(summary, indent=1))
    _plot_flows(flows, categories, out / "labels.png")
    return summary


def _plot_flows(flows: Counter, categories, path: Path) -> None:
    """Data source -> category, one stacked bar per category (the counts behind the paper's Sankey figure)."""
    from mentor.evaluation.plots import plt

    sources = sorted({s for s, _ in flows})
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bottom = [0] * len(categories)
    for source in sources:
        heights = [flows[(source, c)] for c in categories]
        ax.bar(categories, heights, bottom=bottom, label=source)
        bottom = [b + h for b, h in zip(bottom, heights)]
    ax.set(ylabel="samples", title="labelled SFT data: source -> category")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
