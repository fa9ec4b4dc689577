"""A teacher behind an OpenAI-compatible ``/v1/completions`` endpoint: vLLM, SGLang or ``mentor serve-teacher``.

The teacher's log-prob of every token of a sequence is what these servers return for an *echoed prompt*:

    POST {base_url}/completions  {"prompt": [[ids...], ...], "echo": true, "logprobs": 0, "max_tokens": 1}

``choices[i].logprobs.token_logprobs`` then holds ``log p(x_t | x_<t)`` for every prompt token (``null`` for
the first) followed by the one generated token, which we drop. vLLM additionally returns
``choices[i].prompt_logprobs`` (a list of ``{token_id: {"logprob": ...}}``); either form is accepted.
``max_tokens`` is 1, not 0, because vLLM's sampler rejects 0 in most released versions.

Sequences are sent in batches (one request holds ``batch_size`` prompts; ``max_concurrency`` requests are in
flight so the server can batch across them). Connection errors, timeouts, 429/5xx answers and truncated JSON
are retried with exponential backoff; after the retry budget the run stops with one ``MentorError`` line.
"""

from __future__ import annotations

import base64
import http.client
import json
import random
import socket
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from mentor.errors import MentorError

_JITTER = random.Random()

# Our own server's extra endpoint: the tokenizer files, so a remote teacher's vocabulary can be checked.
TOKENIZER_ENDPOINT = "/mentor/v1/tokenizer"


def is_url(value: str) -> bool:
    return value.startswith(("http://", "https://"))


class RetryableError(Exception):
    """A failure worth retrying: the server was unreachable, overloaded, crashed, or cut its answer short."""


class RequestTooLarge(Exception):
    """HTTP 413: the server's size limit; the client splits the batch and tries again."""


class HTTPTeacher:
    """``Teacher`` over HTTP. ``base_url`` ends in ``/v1`` (e.g. ``http://127.0.0.1:8000/v1``)."""

    def __init__(self, base_url: str, *, model: str | None = None, api_key: str | None = None,
                 timeout: float = 120.0, max_retries: int = 4, backoff: float = 0.5, max_backoff: float = 10.0,
                 batch_size: int = 16, max_concurrency: int = 4):
        if not is_url(base_url):
            raise MentorError(f"teacher URL {base_url!r} must start with http:// or https://")
        self.base_url = base_url.rstrip("/")
        if not self.base_url.endswith("/v1"):
            self.base_url += "/v1"
        self.api_key, self.timeout = api_key, timeout
        self.max_retries, self.backoff, self.max_backoff = max_retries, backoff, max_backoff
        self.batch_size, self.max_concurrency = max(1, batch_size), max(1, max_concurrency)
        self._model = model
        self._pool = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="mentor-teacher")

    # --- the Teacher interface --------------------------------------------------------------------
    def compute_logprobs(self, sequences: list[list[int]], score_from: list[int] | None = None) -> list[torch.Tensor]:
        # score_from is not sent: the completions protocol scores whole prompts (vLLM and SGLang alike)
        batches = [sequences[i: i + self.batch_size] for i in range(0, len(sequences), self.batch_size)]
        out: list[torch.Tensor] = []
        for scored in self._pool.map(self._score_batch, batches):
            out.extend(scored)
        return out

    def _score_batch(self, batch: list[list[int]]) -> list[torch.Tensor]:
        body = {"model": self.model, "prompt": batch, "echo": True, "logprobs": 0, "max_tokens": 1,
                "temperature": 0.0}
        try:
            answer = self._request("POST", "/completions", body)
        except RequestTooLarge:
            if len(batch) == 1:
                raise MentorError(f"the teacher server refused a {len(batch[0])}-token sequence as too large: "
                                  "raise its request limit (serve-teacher --max-request-tokens)") from None
            half = len(batch) // 2
            return self._score_batch(batch[:half]) + self._score_batch(batch[half:])
        choices = sorted(answer.get("choices") or [], key=lambda c: c.get("index", 0))
        if len(choices) != len(batch):
            raise MentorError(f"the teacher server answered {len(choices)} choices for {len(batch)} prompts: "
                              "is it an OpenAI-compatible completions endpoint?")
        return [_prompt_logprobs(choice, seq) for choice, seq in zip(choices, batch)]

    # --- metadata ---------------------------------------------------------------------------------
    @property
    def model(self) -> str:
        """The served model name (vLLM checks it); asked from ``/v1/models`` when not given."""
        if self._model is None:
            data = self.model_info()
            self._model = data.get("id", "")
        return self._model

    def model_info(self) -> dict:
        listing = self._request("GET", "/models")
        models = listing.get("data") or []
        if not models:
            raise MentorError(f"the teacher server at {self.base_url} serves no model (/v1/models is empty)")
        if self._model is not None:
            models = [m for m in models if m.get("id") == self._model] or models
        return models[0]

    def download_tokenizer(self, directory: str | Path) -> Path | None:
        """Our server's tokenizer files, written to ``directory``; None if the server does not offer them."""
        try:
            answer = self._request("GET", TOKENIZER_ENDPOINT, root=True)
        except MentorError as exc:
            if "HTTP 404" in str(exc):
                return None
            raise
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name, encoded in answer.get("files", {}).items():
            (directory / Path(name).name).write_bytes(base64.b64decode(encoded))
        return directory

    def close(self) -> None:
        self._pool.shutdown(wait=False)

    # --- transport --------------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: dict | None = None, root: bool = False) -> dict:
        """One JSON request with retries. ``root`` addresses a path outside ``/v1``."""
        base = self.base_url[: -len("/v1")] if root else self.base_url
        url = base + path
        last_error = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
                # jitter so ranks do not retry in lockstep; a private generator so retries never shift
                # the training run's random stream (a run with faults must equal a clean one)
                time.sleep(delay * _JITTER.uniform(0.75, 1.0))
            try:
                return self._send(method, url, body)
            except RetryableError as exc:
                last_error = str(exc)
        raise MentorError(f"teacher server {url} failed {self.max_retries + 1} times (last: {last_error}): "
                          "check that it is running and reachable, or raise --teacher-timeout")

    def _send(self, method: str, url: str, body: dict | None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.api_key:
            request.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            message = _error_message(exc)
            if exc.code == 413:
                raise RequestTooLarge(message) from None
            if exc.code == 429 or exc.code >= 500:
                raise RetryableError(f"HTTP {exc.code} {message}") from None
            if exc.code in (401, 403):
                raise MentorError(f"the teacher server at {url} rejected the API key (HTTP {exc.code}): "
                                  "pass the right --teacher-api-key") from None
            raise MentorError(f"the teacher server at {url} refused the request (HTTP {exc.code}): {message}") from None
        except (urllib.error.URLError, ConnectionError, TimeoutError, socket.timeout,
                http.client.HTTPException) as exc:
            raise RetryableError(f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}") from None
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RetryableError(f"truncated or invalid JSON ({len(raw)} bytes)") from None


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        payload = json.loads(exc.read() or b"{}")
        error = payload.get("error", payload)
        message = error.get("message", "") if isinstance(error, dict) else str(error)
    except (json.JSONDecodeError, AttributeError, OSError):
        message = ""
    text = message or str(exc.reason or "")
    return text.splitlines()[0] if text else ""


def _prompt_logprobs(choice: dict, sequence: list[int]) -> torch.Tensor:
    """``[len(sequence)]`` float32 from an echoed choice: OpenAI ``logprobs`` or vLLM ``prompt_logprobs``."""
    n = len(sequence)
    token_logprobs = (choice.get("logprobs") or {}).get("token_logprobs")
    if token_logprobs is not None and len(token_logprobs) >= n:
        values = [0.0 if v is None else float(v) for v in token_logprobs[:n]]
        return torch.tensor(values, dtype=torch.float32)
    prompt_logprobs = choice.get("prompt_logprobs")
    if prompt_logprobs is not None and len(prompt_logprobs) >= n:
        values = [0.0]
        for token, entry in zip(sequence[1:], prompt_logprobs[1:n]):
            found = (entry or {}).get(str(token))
            if found is None:
                raise MentorError(f"the teacher server's prompt_logprobs lack token {token}")
            values.append(float(found["logprob"] if isinstance(found, dict) else found))
        return torch.tensor(values, dtype=torch.float32)
    got = len(token_logprobs or prompt_logprobs or [])
    raise MentorError(f"the teacher server returned {got} prompt log-probs for a {n}-token sequence: it must "
                      "support echo=true with logprobs (vLLM, SGLang and mentor serve-teacher do)")


def remote_teacher_tokenizer(teacher: HTTPTeacher, tokenizer_name: str = ""):
    """The tokenizer a remote teacher uses, so its vocabulary can be checked against the student's.

    In order: ``--teacher-tokenizer`` if given; the files our own server hands out; the model path or hub id
    that vLLM and SGLang report as ``root``/``id`` in ``/v1/models``.
    """
    from mentor.models.loading import load_tokenizer

    if tokenizer_name:
        return load_tokenizer(tokenizer_name, "teacher tokenizer")
    with tempfile.TemporaryDirectory(prefix="mentor-teacher-tokenizer-") as tmp:
        if teacher.download_tokenizer(tmp) is not None:
            return load_tokenizer(tmp, "teacher tokenizer")
    info = teacher.model_info()
    for name in dict.fromkeys(filter(None, (info.get("root"), info.get("id")))):
        try:
            return load_tokenizer(name, "teacher tokenizer")
        except MentorError:
            continue
    raise MentorError(f"cannot tell which tokenizer the teacher server at {teacher.base_url} uses: pass "
                      "--teacher-tokenizer (a directory or hub id with the teacher's tokenizer)")
