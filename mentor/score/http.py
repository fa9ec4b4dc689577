"""A teacher behind an OpenAI-compatible ``/v1/completions`` endpoint: vLLM, SGLang or ``mentor serve-teacher``.

The teacher's log-prob of every token of a sequence is what these servers return for an *echoed prompt*:

    POST {base_url}/completions  {"prompt": [[ids...], ...], "echo": true, "logprobs": 0, "max_tokens": 1,
                                  "return_token_ids": true, "return_tokens_as_token_ids": true}

``choices[i].logprobs.token_logprobs`` then holds ``log p(x_t | x_<t)`` for every prompt token (``null`` for
the first) followed by the one generated token, which we drop. vLLM additionally returns
``choices[i].prompt_logprobs`` (a list of ``{token_id: {"logprob": ...}}``); either form is accepted.
``max_tokens`` is 1, not 0, because vLLM's sampler rejects 0 in most released versions.

The answer is checked, never trusted: a ``null`` anywhere but the first position, a value that is not a number,
a count that is not the sequence's, or a reply that is not an OpenAI completions object is one ``MentorError``
(a protocol error: retrying cannot help). Which tokens were scored is compared with the ids sent wherever the
answer tells: ``choices[i].prompt_token_ids`` (vLLM with ``return_token_ids``), ``logprobs.tokens`` written as
``token_id:N`` (vLLM's ``return_tokens_as_token_ids``) and the token-id keys of ``prompt_logprobs``. Servers
that do not know these two request fields ignore them (vLLM logs that it did).

**Top-k prompt log-probs** (``compute_top_k``, OPD's ``top_k`` divergence) use vLLM's extension field, as
defined in vLLM 0.33.0 (commit 4ba787ec9: ``vllm/entrypoints/openai/completion/protocol.py``
``CompletionRequest.prompt_logprobs`` and ``CompletionResponseChoice.prompt_logprobs``; the entries are built by
``vllm/logprobs.py`` ``append_logprobs_for_next_position`` from ``Sampler.gather_logprobs``):

    POST {base_url}/completions  {"prompt": [[ids...], ...], "echo": true, "max_tokens": 1, "prompt_logprobs": k,
                                  "return_token_ids": true}

``choices[i].prompt_logprobs`` is ``[null, {token_id: {"logprob": x, "rank": r, "decoded_token": s}}, ...]``: one
object per prompt position after the first, holding the prompt's own token (its rank: 1 + the number of tokens
at least as likely) and the teacher's k likeliest tokens (ranks 1..k): k entries when the own token is among
them, else k + 1. They are the teacher's raw log-softmax (prompt tokens skip vLLM's sampling processors:
temperature 1), ``-inf`` written as -9999.0. vLLM refuses k above its ``--max-logprobs`` (default 20).

Sequences are sent in batches (one request holds ``batch_size`` prompts; ``max_concurrency`` requests are in
flight so the server can batch across them). Connection errors, timeouts, 429/5xx answers and truncated JSON
are retried with exponential backoff; after the retry budget the run stops with one ``MentorError`` line.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import logging
import math
import random
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from mentor.errors import MentorError
from mentor.files import is_url
from mentor.score.top_k import TeacherTopK, top_k_from_sequences

logger = logging.getLogger(__name__)
_JITTER = random.Random()

# Our own server's extra endpoint: the tokenizer files, so a remote teacher's vocabulary can be checked.
TOKENIZER_ENDPOINT = "/mentor/v1/tokenizer"
CONNECT_TIMEOUT = 10.0  # seconds to connect (capped by --teacher-timeout): a server that cannot accept is down
SLOW_ATTEMPT = 5.0  # an attempt that failed after this long is reported when it is retried (no silent minutes)
WAIT_NOTICE_AFTER = 10.0  # seconds a request waits for its answer before a line says what is waited for
WAIT_NOTICE_EVERY = 30.0  # then again this often, until the answer comes or --teacher-timeout ends the attempt


class _PhasedTimeouts:
    """An HTTP(S) connection that connects within ``CONNECT_TIMEOUT`` and then waits up to its own timeout
    for each read: the first byte of the answer, and every later one."""

    def connect(self):
        read_timeout, self.timeout = self.timeout, min(self.timeout, CONNECT_TIMEOUT)
        try:
            super().connect()
        finally:
            self.timeout = read_timeout
        self.sock.settimeout(read_timeout)


class _HTTPConnection(_PhasedTimeouts, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_PhasedTimeouts, http.client.HTTPSConnection):
    pass


class _HTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req):
        return self.do_open(_HTTPConnection, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req):
        return self.do_open(_HTTPSConnection, req, context=self._context)


_OPENER = urllib.request.build_opener(_HTTPHandler, _HTTPSHandler)


class RetryableError(Exception):
    """A failure worth retrying: the server was unreachable, overloaded, crashed, or cut its answer short."""


class RequestTooLarge(Exception):
    """HTTP 413: the server's size limit; the client splits the batch and tries again."""


class _BadAnswer(MentorError):
    """A malformed answer, described from after the server's name (" returned ...", "'s top 5 ..."): the
    client that asked adds the name, which says what the server is to the run (a teacher, a reference)."""


class HTTPTeacher:
    """``Teacher`` over HTTP. ``base_url`` ends in ``/v1`` (e.g. ``http://127.0.0.1:8000/v1``)."""

    supports_top_k = True  # a ``TopKTeacher``: vLLM's prompt_logprobs=k (OPD's top_k divergence)

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        batch_size: int = 16,
        max_concurrency: int = 4,
        role: str = "teacher",
        notice_after: float = WAIT_NOTICE_AFTER,
        notice_every: float = WAIT_NOTICE_EVERY,
    ):
        self.role = role  # what the server is to this run ("teacher", "reference"): its errors say so
        if not is_url(base_url):
            raise MentorError(f"{role} URL {base_url!r} must start with http:// or https://")
        self.base_url = base_url.rstrip("/")
        if not self.base_url.endswith("/v1"):
            self.base_url += "/v1"
        self.api_key, self.timeout = api_key, timeout
        self.max_retries, self.backoff, self.max_backoff = max_retries, backoff, max_backoff
        self.batch_size, self.max_concurrency = max(1, batch_size), max(1, max_concurrency)
        self._model = model
        self.notice_after, self.notice_every = notice_after, notice_every
        self._speaker = threading.Lock()  # one waiting request speaks at a time, not every one in flight
        self._pool = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="mentor-teacher")

    # --- the Teacher interface --------------------------------------------------------------------
    def compute_logprobs(self, sequences: list[list[int]], score_from: list[int] | None = None) -> list[torch.Tensor]:
        # score_from is not sent: the completions protocol scores whole prompts (vLLM and SGLang alike)
        batches = [sequences[i : i + self.batch_size] for i in range(0, len(sequences), self.batch_size)]
        out: list[torch.Tensor] = []
        for scored in self._pool.map(self._score_batch, batches):
            out.extend(scored)
        return out

    def compute_top_k(self, sequences: list[list[int]], k: int) -> list[TeacherTopK]:
        """For each sequence, the teacher's ``k`` likeliest next tokens at every position (vLLM's
        ``prompt_logprobs=k``) and the log-prob of the sequence's own token: ``TeacherTopK`` of shapes ``[n]``,
        ``[n, k]``, ``[n, k]`` (descending; row 0 is zeros: nothing predicts the first token)."""
        if k < 1:
            raise MentorError(f"top-k prompt log-probs need k >= 1 (got {k})")
        batches = [sequences[i : i + self.batch_size] for i in range(0, len(sequences), self.batch_size)]
        out: list[TeacherTopK] = []
        for answers in self._pool.map(lambda batch: self._top_k_batch(batch, k), batches):
            out.extend(answers)
        return out

    def batch_top_k(self, batch, k: int) -> TeacherTopK:
        """``TopKTeacher.batch_top_k``: one request per ``batch_size`` sequences."""
        return top_k_from_sequences(self.compute_top_k, batch, k)

    def _score_batch(self, batch: list[list[int]]) -> list[torch.Tensor]:
        body = {
            "echo": True,
            "logprobs": 0,
            "max_tokens": 1,
            "temperature": 0.0,
            "return_token_ids": True,
            "return_tokens_as_token_ids": True,
        }
        with self._naming_the_server():
            return [_prompt_logprobs(choice, seq) for choice, seq in zip(self._choices(batch, body), batch)]

    def _top_k_batch(self, batch: list[list[int]], k: int) -> list[TeacherTopK]:
        # no OpenAI "logprobs": prompt_logprobs holds every number needed and the answer stays half the size
        body = {"echo": True, "max_tokens": 1, "temperature": 0.0, "prompt_logprobs": k, "return_token_ids": True}
        with self._naming_the_server():
            return [_prompt_top_k(choice, seq, k) for choice, seq in zip(self._choices(batch, body), batch)]

    @contextlib.contextmanager
    def _naming_the_server(self):
        """A malformed answer found by the module's checks, reported as one line that names this server."""
        try:
            yield
        except _BadAnswer as exc:
            raise MentorError(f"the {self.role} server{exc}") from None

    def _choices(self, batch: list[list[int]], fields: dict) -> list[dict]:
        """One completions request for ``batch`` (halved while the server answers 413), its choices in order."""
        try:
            answer = self._request("POST", "/completions", {"model": self.model, "prompt": batch, **fields})
        except RequestTooLarge:
            if len(batch) == 1:
                raise MentorError(
                    f"the {self.role} server refused a {len(batch[0])}-token sequence as too large: "
                    "raise its request limit (serve-teacher --max-request-tokens)"
                ) from None
            half = len(batch) // 2
            return self._choices(batch[:half], fields) + self._choices(batch[half:], fields)
        choices = answer.get("choices")
        if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
            raise _not_openai(f"no list of choices, keys {sorted(answer)[:6]}")
        if len(choices) != len(batch):
            raise MentorError(
                f"the {self.role} server answered {len(choices)} choices for {len(batch)} prompts: "
                "is it an OpenAI-compatible completions endpoint?"
            )
        indexes = [c.get("index", i) for i, c in enumerate(choices)]
        if sorted(i for i in indexes if is_int(i)) != list(range(len(batch))):
            raise _not_openai(f"choice indexes {indexes[:8]} are not 0..{len(batch) - 1}")
        return [choices[indexes.index(i)] for i in range(len(batch))]

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
        if not isinstance(models, list) or not all(isinstance(m, dict) for m in models):
            raise MentorError(
                f"the {self.role} server at {self.base_url} answered /v1/models with no list of models: "
                "is it an OpenAI-compatible endpoint?"
            )
        if not models:
            raise MentorError(f"the {self.role} server at {self.base_url} serves no model (/v1/models is empty)")
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
            started = time.perf_counter()
            try:
                return self._send(method, url, body)
            except RetryableError as exc:
                last_error = str(exc)
                if time.perf_counter() - started >= SLOW_ATTEMPT and attempt < self.max_retries:
                    logger.warning(f"{self.role} server {url}: {last_error}; retry {attempt + 1} of {self.max_retries}")
        raise MentorError(
            f"{self.role} server {url} failed {self.max_retries + 1} times (last: {last_error}): "
            "check that it is running and reachable, or raise --teacher-timeout"
        )

    def _send(self, method: str, url: str, body: dict | None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.api_key:
            request.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            with self._waiting(url), _OPENER.open(request, timeout=self.timeout) as response:
                try:
                    raw = response.read()
                except TimeoutError:
                    raise RetryableError(
                        f"the answer stopped arriving for {self.timeout:g} s (--teacher-timeout)"
                    ) from None
        except urllib.error.HTTPError as exc:
            message = _error_message(exc)
            if exc.code == 413:
                raise RequestTooLarge(message) from None
            if exc.code == 429 or exc.code >= 500:
                raise RetryableError(f"HTTP {exc.code} {message}") from None
            if exc.code in (401, 403):
                raise MentorError(
                    f"the {self.role} server at {url} rejected the API key (HTTP {exc.code}): "
                    "pass the right --teacher-api-key"
                ) from None
            raise MentorError(
                f"the {self.role} server at {url} refused the request (HTTP {exc.code}): {message}"
            ) from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, (TimeoutError, socket.timeout)):
                raise RetryableError(f"could not connect within {min(self.timeout, CONNECT_TIMEOUT):g} s") from None
            raise RetryableError(f"{type(exc).__name__}: {exc.reason}") from None
        except TimeoutError:
            raise RetryableError(
                f"connected, but no answer within {self.timeout:g} s (waiting for its first byte; --teacher-timeout)"
            ) from None
        except (ConnectionError, http.client.HTTPException) as exc:
            raise RetryableError(f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}") from None
        try:
            answer = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RetryableError(f"truncated or invalid JSON ({len(raw)} bytes)") from None
        if not isinstance(answer, dict):  # a whole, well-formed answer of another protocol: not retried
            raise MentorError(
                f"the {self.role} server at {url} answered a JSON {type(answer).__name__}, not an "
                "object: is it an OpenAI-compatible endpoint (vLLM, SGLang, mentor serve-teacher)?"
            )
        return answer

    def _waiting(self, url: str) -> _WaitNotice:
        def say(waited: float) -> None:
            logger.warning(
                f"waiting for the {self.role} server at {url} to answer ({waited:g} s of "
                f"--teacher-timeout {self.timeout:g} s)"
            )

        return _WaitNotice(say, self.notice_after, self.notice_every, self._speaker)


class _WaitNotice:
    """While a request has no answer, a line after ``after`` seconds and then every ``every`` seconds says what
    is waited for: a server that accepts and never answers is not a silent --teacher-timeout. Of the requests
    in flight, one speaks (``speaker``, a lock it holds until its request ends)."""

    def __init__(self, say, after: float, every: float, speaker: threading.Lock):
        self._say, self._after, self._every, self._speaker = say, after, every, speaker
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="mentor-teacher-wait")

    def __enter__(self) -> _WaitNotice:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()

    def _watch(self) -> None:
        waited, pause, speaking = 0.0, self._after, False
        try:
            while not self._done.wait(pause):
                waited += pause
                speaking = speaking or self._speaker.acquire(blocking=False)
                if speaking:
                    self._say(waited)
                pause = self._every
        finally:
            if speaking:
                self._speaker.release()


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
    """``[len(sequence)]`` float32 from an echoed choice: OpenAI ``logprobs`` or vLLM ``prompt_logprobs``.

    Entry 0 is 0 (nothing predicts the first token). The answer must be about exactly ``sequence``.
    """
    n = len(sequence)
    logprobs, prompt_logprobs = choice.get("logprobs"), choice.get("prompt_logprobs")
    if logprobs is not None and not isinstance(logprobs, dict):
        raise _not_openai(f"logprobs is a {type(logprobs).__name__}")
    token_logprobs = (logprobs or {}).get("token_logprobs")
    for name, value in (("logprobs.token_logprobs", token_logprobs), ("prompt_logprobs", prompt_logprobs)):
        if value is not None and not isinstance(value, list):
            raise _not_openai(f"{name} is a {type(value).__name__}, not a list")
    _check_scored_tokens(choice, logprobs or {}, prompt_logprobs, sequence)
    if token_logprobs is not None and len(token_logprobs) in (n, n + 1):  # + the one generated token
        values = token_logprobs[:n]
    elif prompt_logprobs is not None and len(prompt_logprobs) == n:
        values = prompt_logprobs[:1] + [
            _entry_logprob(entry, token) for token, entry in zip(sequence[1:], prompt_logprobs[1:])
        ]
    else:
        got = len(token_logprobs if token_logprobs is not None else prompt_logprobs or [])
        raise _BadAnswer(
            f" returned {got} prompt log-probs for a {n}-token sequence: it must "
            "score exactly the ids sent, with echo=true and logprobs (vLLM, SGLang and mentor "
            "serve-teacher do)"
        )
    for position, value in enumerate(values):
        if value is None and position > 0:
            raise _BadAnswer(
                f" returned a null log-prob for token {position} of a {n}-token "
                "sequence (only the first token may have none): it did not score the whole sequence"
            )
        if value is not None and (not _is_number(value) or math.isnan(value)):
            raise _not_openai(f"log-prob {str(value)[:20]!r} at position {position} is not a number")
    return torch.tensor([0.0] + [float(v) for v in values[1:]], dtype=torch.float32)


def _prompt_top_k(choice: dict, sequence: list[int], k: int) -> TeacherTopK:
    """``TeacherTopK`` from an echoed choice's vLLM ``prompt_logprobs`` (k or k + 1 entries per position)."""
    n = len(sequence)
    prompt_logprobs = choice.get("prompt_logprobs")
    if prompt_logprobs is None:
        raise _BadAnswer(
            " returned no prompt_logprobs: top-k teacher log-probs need a server "
            "that implements vLLM's prompt_logprobs (vLLM, mentor serve-teacher)"
        )
    if not isinstance(prompt_logprobs, list):
        raise _not_openai(f"prompt_logprobs is a {type(prompt_logprobs).__name__}, not a list")
    if len(prompt_logprobs) != n:
        raise _BadAnswer(
            f" returned {len(prompt_logprobs)} prompt_logprobs for a {n}-token "
            "sequence: it must score exactly the ids sent"
        )
    _check_scored_tokens(choice, {}, prompt_logprobs, sequence)
    token_logprobs, ids, logprobs = torch.zeros(n), torch.zeros((n, k), dtype=torch.long), torch.zeros((n, k))
    for position in range(1, n):
        entry = prompt_logprobs[position]
        if entry is None:
            raise _BadAnswer(
                f" returned a null log-prob for token {position} of a {n}-token "
                "sequence (only the first token may have none): it did not score the whole sequence"
            )
        if not all(token.isdigit() for token in entry):
            raise _not_openai(f"prompt_logprobs[{position}] has keys {list(entry)[:3]}, not token ids")
        values = {token: _top_k_value(value, position) for token, value in entry.items()}
        own = str(sequence[position])
        if len(values) not in (k, k + 1):
            raise _BadAnswer(
                f" returned {len(values)} log-probs at position {position} where "
                f"prompt_logprobs={k} gives {k} or {k + 1}: it must return the top {k} (vLLM: start "
                f"it with --max-logprobs {k} or more)"
            )
        # vLLM adds the own token to the top k only when it is not one of them
        top = sorted(((v, t) for t, v in values.items() if len(values) == k or t != own), reverse=True)
        ranks = [entry[t].get("rank") if isinstance(entry[t], dict) else None for _, t in top]
        if all(is_int(r) for r in ranks) and sorted(ranks) != list(range(1, k + 1)):  # vLLM ranks them 1..k
            raise _BadAnswer(
                f"'s top {k} have ranks {sorted(ranks)[:8]} at position {position}, "
                f"not 1..{k}: they are not its top-k log-probs"
            )
        if len(values) == k + 1 and values[own] > top[-1][0] + 1e-4:
            raise _BadAnswer(
                f"'s top {k} at position {position} leave out token {own}, which is "
                "likelier than one of them: they are not its top-k log-probs"
            )
        if torch.logsumexp(torch.tensor([v for v, _ in top], dtype=torch.float64), 0) > 1e-3:
            raise _BadAnswer(
                f"'s top-{k} probabilities at position {position} sum to more "
                "than 1: they are not log-probs (vLLM: keep --logprobs-mode raw_logprobs)"
            )
        token_logprobs[position] = values[own]
        ids[position] = torch.tensor([int(t) for _, t in top])
        logprobs[position] = torch.tensor([v for v, _ in top])
    return TeacherTopK(token_logprobs, ids, logprobs)


def _top_k_value(value, position: int) -> float:
    """``{"logprob": x, ...}`` or a bare number: a finite-or--inf log-prob, at most 0."""
    if isinstance(value, dict):
        if "logprob" not in value:
            raise _not_openai(f"a prompt_logprobs entry has no logprob, keys {sorted(value)[:4]}")
        value = value["logprob"]
    if not _is_number(value) or math.isnan(value):
        raise _not_openai(f"log-prob {str(value)[:20]!r} at position {position} is not a number")
    if value > 1e-4:
        raise _BadAnswer(
            f" returned log-prob {value:g} > 0 at position {position}: it must "
            "return log-probs (vLLM: keep --logprobs-mode raw_logprobs)"
        )
    return float(value)


def _entry_logprob(entry, token: int):
    """``{token_id: {"logprob": x, ...}}`` (vLLM) or ``{token_id: x}``: the sent token's value (None stays None)."""
    if entry is None:
        return None
    found = entry.get(str(token))  # present: _check_scored_tokens made sure
    if isinstance(found, dict) and "logprob" not in found:
        raise _not_openai(f"a prompt_logprobs entry has no logprob, keys {sorted(found)[:4]}")
    return found.get("logprob") if isinstance(found, dict) else found


def _check_scored_tokens(choice: dict, logprobs: dict, prompt_logprobs: list | None, sequence: list[int]) -> None:
    """The tokens the server scored are the ids sent, wherever its answer names them; else one line."""
    sent = [str(t) for t in sequence]
    prompt_ids = choice.get("prompt_token_ids")
    if prompt_ids is not None:
        if not isinstance(prompt_ids, list) or not all(is_int(t) for t in prompt_ids):
            raise _not_openai("prompt_token_ids is not a list of token ids")
        _compare("prompt_token_ids", [str(t) for t in prompt_ids], sent)
    tokens = logprobs.get("tokens")
    if tokens is not None and not isinstance(tokens, list):
        raise _not_openai(f"logprobs.tokens is a {type(tokens).__name__}, not a list")
    if tokens and all(isinstance(t, str) and t.startswith("token_id:") for t in tokens):
        # text tokens cannot be compared without the tokenizer; the count of log-probs is checked instead
        _compare("logprobs.tokens", [t.removeprefix("token_id:") for t in tokens[: len(sent)]], sent)
    for position, entry in enumerate(prompt_logprobs or []):
        if entry is None or position >= len(sent):
            continue
        if not isinstance(entry, dict):
            raise _not_openai(f"prompt_logprobs[{position}] is a {type(entry).__name__}, not an object")
        if sent[position] not in entry:  # vLLM always lists the prompt's own token, then the top-k
            keys = ", ".join(list(entry)[:3])
            raise _mismatch(position, f"log-probs for token {keys or 'none'} (prompt_logprobs)", sent[position])


def _compare(field: str, got: list[str], sent: list[str]) -> None:
    for position in range(max(len(got), len(sent))):
        have = got[position] if position < len(got) else None
        want = sent[position] if position < len(sent) else None
        if have != want:
            raise _mismatch(position, f"token {have} ({field})" if have is not None else f"no token ({field})", want)


def _mismatch(position: int, found: str, sent: str | None) -> _BadAnswer:
    return _BadAnswer(
        f" scored other tokens than were sent: at position {position} its answer "
        f"has {found} where mentor sent {sent if sent is not None else 'nothing'}: it must score the "
        "token ids as given (no re-tokenization, added BOS or truncation)"
    )


def _not_openai(what: str) -> _BadAnswer:
    return _BadAnswer(
        f"'s answer is not an OpenAI completions answer ({what}): point --teacher "
        "at an OpenAI-compatible /v1 endpoint (vLLM, SGLang or mentor serve-teacher)"
    )


def is_int(value) -> bool:
    """A JSON integer (``true`` and ``false`` are not), as the completions protocol's ids and counts must be."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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
    raise MentorError(
        f"cannot tell which tokenizer the {teacher.role} server at {teacher.base_url} uses: pass "
        "--teacher-tokenizer (a directory or hub id with the teacher's tokenizer)"
    )
