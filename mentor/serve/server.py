"""``mentor serve-teacher MODEL``: a local transformers model behind the OpenAI completions protocol.

It serves exactly what on-policy distillation asks of a teacher (the log-prob of every token of given
sequences) the way vLLM and SGLang do, so ``--teacher http://host:port/v1`` works against any of them:

    POST /v1/completions   {"prompt": [[ids], ...], "echo": true, "logprobs": 0, "max_tokens": 0 or 1}
                           -> choices[i].logprobs.token_logprobs (OpenAI), and choices[i].prompt_logprobs
                              when "prompt_logprobs": k is set (vLLM's extension, k >= 0): per position after
                              the first, {token_id: {"logprob", "rank", "decoded_token"}} with the own token
                              first, then the k likeliest (k + 1 entries when the own token is not one of them),
                              exactly as vLLM 0.33.0 builds it (vllm/logprobs.py,
                              append_logprobs_for_next_position; ranks as Sampler.gather_logprobs counts them);
                              vLLM's "return_token_ids" adds choices[i].prompt_token_ids and .token_ids, and
                              "return_tokens_as_token_ids" writes logprobs.tokens as "token_id:N"
    GET  /v1/models        the served model, its context length and vocabulary size
    GET  /mentor/v1/tokenizer   the tokenizer files (base64), so clients can check the vocabulary
    GET  /health

It scores prompts and generates at most one (greedy) token: it is a teacher, not a chat server. It binds
127.0.0.1 unless told otherwise, checks an optional bearer API key, and refuses oversized requests.

Whatever a client sends, the answer is a JSON body with a 2xx or 4xx status, never a 500 for a bad request
and never a hang: a missing, malformed or negative Content-Length, a chunked body, JSON nested too deeply or
with numbers Python cannot hold, an unknown method. Each connection has its own thread and a read timeout,
so a client that connects and sends nothing (or half a body) never blocks the others and is dropped.
"""

from __future__ import annotations

import base64
import hmac
import json
import tempfile
import threading
import time
import uuid
from concurrent.futures import TimeoutError as FutureTimeout
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from torch import nn

from mentor.errors import MentorError
from mentor.score.http import TOKENIZER_ENDPOINT, is_int
from mentor.serve.engine import ScoringEngine

LOOPBACK = ("127.0.0.1", "localhost", "::1")


class RequestError(Exception):
    """A client error, answered in the OpenAI error format."""

    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


class TeacherServer:
    """``ThreadingHTTPServer`` + ``ScoringEngine``. ``port=0`` picks a free port (see ``.url``)."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer,
        *,
        model_name: str = "teacher",
        host: str = "127.0.0.1",
        port: int = 8000,
        api_key: str | None = None,
        max_batch_tokens: int = 16384,
        max_request_tokens: int = 262_144,
        max_request_bytes: int = 32 * 2**20,
        request_timeout: float = 600.0,
        idle_timeout: float = 60.0,
        verbose: bool = False,
    ):
        self.tokenizer, self.model_name, self.api_key = tokenizer, model_name, api_key or None
        self.max_request_tokens, self.max_request_bytes = max_request_tokens, max_request_bytes
        # request_timeout: the longest wait for the model; idle_timeout: for a client's next bytes
        self.request_timeout, self.idle_timeout, self.verbose = request_timeout, idle_timeout, verbose
        self.vocab_size = model.get_output_embeddings().weight.shape[0]
        self.context_length = _context_length(model)
        self.engine = ScoringEngine(model, tokenizer.pad_token_id, max_batch_tokens)
        self._tokenizer_files = _tokenizer_files(tokenizer)
        self.httpd = ThreadingHTTPServer((host, port), _handler_for(self))
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/v1"

    def start(self) -> TeacherServer:
        """Serve in a background thread (tests, notebooks); ``serve_forever`` blocks instead."""
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="mentor-http", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.engine.close()

    def __enter__(self) -> TeacherServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # --- endpoints --------------------------------------------------------------------------------
    def models(self) -> dict:
        return {
            "object": "list",
            "data": [
                {
                    "id": self.model_name,
                    "object": "model",
                    "created": 0,
                    "owned_by": "mentor",
                    "root": self.model_name,
                    "max_model_len": self.context_length,
                    "vocab_size": self.vocab_size,
                }
            ],
        }

    def tokenizer_files(self) -> dict:
        return {"files": self._tokenizer_files}

    def completions(self, body: dict) -> dict:
        prompts = self._prompts(body)
        max_tokens = body.get("max_tokens", 16)
        if max_tokens not in (0, 1):
            raise RequestError(HTTPStatus.BAD_REQUEST, "this server scores prompts: max_tokens must be 0 or 1")
        if body.get("n", 1) != 1 or body.get("stream"):
            raise RequestError(HTTPStatus.BAD_REQUEST, "n > 1 and stream are not supported")
        logprobs, prompt_logprobs = body.get("logprobs"), body.get("prompt_logprobs")
        if logprobs not in (None, 0):
            raise RequestError(
                HTTPStatus.BAD_REQUEST,
                "logprobs must be 0: top alternatives of the OpenAI "
                "logprobs are not served (ask for prompt_logprobs: k)",
            )
        if prompt_logprobs is not None and not (is_int(prompt_logprobs) and 0 <= prompt_logprobs <= self.vocab_size):
            raise RequestError(HTTPStatus.BAD_REQUEST, f"prompt_logprobs must be an integer in [0, {self.vocab_size}]")
        echo = bool(body.get("echo", False))
        try:
            scored = self.engine.submit(prompts, prompt_logprobs).result(timeout=self.request_timeout)
        except FutureTimeout:
            raise RequestError(
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"the model did not answer within {self.request_timeout:g} s: the server is overloaded, retry later",
            ) from None
        choices = []
        for index, (prompt, s) in enumerate(zip(prompts, scored)):
            generated = [s.next_token] if max_tokens else []
            tokens = (prompt if echo else []) + generated
            values = ([None] + s.logprobs[1:] if echo else []) + ([s.next_logprob] if max_tokens else [])
            choice = {
                "index": index,
                "text": self.tokenizer.decode(tokens),
                "finish_reason": "length",
                "logprobs": None,
            }
            if logprobs is not None:
                names = (
                    [f"token_id:{t}" for t in tokens]
                    if body.get("return_tokens_as_token_ids")
                    else self.tokenizer.convert_ids_to_tokens(tokens)
                )
                choice["logprobs"] = {"tokens": names, "token_logprobs": values, "top_logprobs": None}
            if prompt_logprobs is not None:
                choice["prompt_logprobs"] = self._prompt_logprobs(prompt, s)
            if body.get("return_token_ids"):
                choice.update(prompt_token_ids=prompt, token_ids=generated)
            choices.append(choice)
        prompt_tokens = sum(len(p) for p in prompts)
        completion_tokens = max_tokens * len(prompts)
        return {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def _prompt_logprobs(self, prompt: list[int], scored) -> list[dict | None]:
        """vLLM's ``prompt_logprobs``: ``[None, {id: {"logprob", "rank", "decoded_token"}}, ...]``, the own token
        first (its rank), then the top k (ranks 1..k; a dict keeps the own token once, first)."""
        top = scored.top
        out: list[dict | None] = [None]
        for position in range(1, len(prompt)):
            ids = [prompt[position]] + top.ids[position].tolist()
            values = [top.token_logprobs[position].item()] + top.logprobs[position].tolist()
            ranks = [int(top.token_ranks[position])] + list(range(1, len(ids)))
            names = self.tokenizer.convert_ids_to_tokens(ids)
            entry: dict[str, dict] = {}
            for token, value, rank, name in zip(ids, values, ranks, names):
                # vLLM writes -inf as -9999.0 (JSON has no infinity)
                entry[str(token)] = {"logprob": max(value, -9999.0), "rank": rank, "decoded_token": name}
            out.append(entry)
        return out

    def _prompts(self, body: dict) -> list[list[int]]:
        model = body.get("model")
        if model not in (None, "", self.model_name):
            raise RequestError(
                HTTPStatus.NOT_FOUND, f"model {model!r} is not served here (this is {self.model_name!r})"
            )
        prompt = body.get("prompt")
        if isinstance(prompt, str) or (isinstance(prompt, list) and prompt and isinstance(prompt[0], int)):
            prompt = [prompt]
        if not isinstance(prompt, list) or not prompt:
            raise RequestError(HTTPStatus.BAD_REQUEST, "prompt must be token ids, a list of them, or text")
        prompts = [self._encode(p) for p in prompt]
        total = sum(len(p) for p in prompts)
        if total > self.max_request_tokens:
            raise RequestError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"{total} tokens exceed this server's limit of {self.max_request_tokens} per request",
            )
        return prompts

    def _encode(self, prompt) -> list[int]:
        if isinstance(prompt, str):
            prompt = self.tokenizer(prompt)["input_ids"]
        if not isinstance(prompt, list) or not prompt or not all(isinstance(t, int) for t in prompt):
            raise RequestError(HTTPStatus.BAD_REQUEST, "each prompt must be a non-empty list of token ids")
        if min(prompt) < 0 or max(prompt) >= self.vocab_size:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"token ids must lie in [0, {self.vocab_size})")
        if self.context_length and len(prompt) > self.context_length:
            raise RequestError(
                HTTPStatus.BAD_REQUEST,
                f"a {len(prompt)}-token prompt exceeds the model's context of {self.context_length}",
            )
        return prompt


def _handler_for(server: TeacherServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "mentor-teacher"
        timeout = server.idle_timeout  # a socket read that waits longer ends the connection (not the server)

        def __getattr__(self, name: str):
            # any method without a do_X (PUT, DELETE, FOO): 405, where the standard library answers 501
            if name.startswith("do_"):
                return self._method_not_allowed
            raise AttributeError(name)

        def _method_not_allowed(self) -> None:
            self._answer(self._refuse_method)

        def _refuse_method(self):
            raise RequestError(HTTPStatus.METHOD_NOT_ALLOWED, f"method {self.command} is not served: use GET or POST")

        def do_GET(self) -> None:
            routes = {
                "/health": lambda: {"status": "ok"},
                "/v1/models": server.models,
                TOKENIZER_ENDPOINT: server.tokenizer_files,
            }
            self._answer(lambda: routes[self.path]() if self.path in routes else self._not_found())

        def do_POST(self) -> None:
            if self.path != "/v1/completions":
                self._answer(self._not_found)
                return
            self._answer(lambda: server.completions(self._json_body()))

        def _not_found(self):
            raise RequestError(HTTPStatus.NOT_FOUND, f"no route {self.path}")

        def _json_body(self) -> dict:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                raise RequestError(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length, not chunked")
            declared = (self.headers.get("Content-Length") or "0").strip()
            if not declared.isdigit():  # also refuses "-5": reading a negative length would wait for EOF
                raise RequestError(HTTPStatus.BAD_REQUEST, f"Content-Length {declared[:20]!r} is not a byte count")
            length = int(declared)
            if length > server.max_request_bytes:
                raise RequestError(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    f"request body of {length} bytes exceeds {server.max_request_bytes}",
                )
            try:
                data = self.rfile.read(length)
            except TimeoutError:
                raise RequestError(
                    HTTPStatus.REQUEST_TIMEOUT, f"the body did not arrive within {server.idle_timeout:g} s"
                ) from None
            if len(data) < length:
                raise RequestError(HTTPStatus.BAD_REQUEST, f"the body ended after {len(data)} of {length} bytes")
            try:
                body = json.loads(data or b"{}")
            except (ValueError, UnicodeDecodeError):  # JSONDecodeError, and integers too long to convert
                raise RequestError(HTTPStatus.BAD_REQUEST, "the request body is not valid JSON") from None
            except RecursionError:
                raise RequestError(HTTPStatus.BAD_REQUEST, "the request body is nested too deeply") from None
            if not isinstance(body, dict):
                raise RequestError(HTTPStatus.BAD_REQUEST, "the request body must be a JSON object")
            return body

        def _answer(self, produce) -> None:
            status, payload = HTTPStatus.OK, None
            try:
                self._check_key()
                payload = produce()
            except RequestError as exc:
                status, payload = exc.status, _error(exc.status, str(exc))
            except Exception as exc:  # a model failure must not kill the server; the client retries 5xx
                status = HTTPStatus.INTERNAL_SERVER_ERROR
                payload = _error(status, f"{type(exc).__name__}: {exc}")
            data = json.dumps(payload).encode()
            self.send_response(status)
            if status != HTTPStatus.OK or self.command not in ("GET", "POST"):
                self.close_connection = True  # a body we refused may still sit unread on the socket
                self.send_header("Connection", "close")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":  # a HEAD answer has headers only
                self.wfile.write(data)

        def _check_key(self) -> None:
            if server.api_key is None or self.path == "/health":
                return
            given = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(given.encode(), server.api_key.encode()):
                raise RequestError(HTTPStatus.UNAUTHORIZED, "missing or wrong API key (Authorization: Bearer KEY)")

        def log_message(self, format: str, *args) -> None:
            if server.verbose:
                super().log_message(format, *args)

    return Handler


def check_device(device: str) -> None:
    """``--device`` names a device this machine has, or one line saying which to use."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise MentorError(f"--device {device!r} is not a device: use cpu, cuda, cuda:1 or mps") from None
    if parsed.type == "cpu":
        return
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if parsed.index is not None and parsed.index < count or parsed.index is None and count:
            return
        have = f"it has {count} CUDA device(s)" if count else "it has no CUDA device"
        raise MentorError(
            f"--device {device} is not on this machine ({have}): use --device cpu" + (" or cuda:0" if count else "")
        )
    if parsed.type == "mps" and torch.backends.mps.is_available():
        return
    raise MentorError(f"--device {device} is not available on this machine: use --device cpu")


def _error(status: HTTPStatus, message: str) -> dict:
    return {"error": {"message": message, "type": status.phrase, "code": int(status)}}


def _context_length(model: nn.Module) -> int | None:
    from mentor.models.loading import context_length

    return context_length(model)


def _tokenizer_files(tokenizer) -> dict[str, str]:
    with tempfile.TemporaryDirectory(prefix="mentor-serve-tokenizer-") as tmp:
        tokenizer.save_pretrained(tmp)
        return {p.name: base64.b64encode(p.read_bytes()).decode() for p in Path(tmp).iterdir() if p.is_file()}


def serve_teacher(
    model_path: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    dtype: str = "float32",
    device: str = "cpu",
    served_model_name: str = "",
    max_batch_tokens: int = 16384,
    max_request_tokens: int = 262_144,
    max_request_bytes: int = 32 * 2**20,
    verbose: bool = False,
) -> None:
    """Load ``model_path`` and serve it until interrupted (the ``mentor serve-teacher`` command)."""
    from mentor.models.loading import load_model, load_tokenizer
    from mentor.recipes.common import quiet_transformers

    quiet_transformers()
    if host not in LOOPBACK and not api_key:
        raise MentorError(
            f"refusing to serve on {host} without an API key: pass --api-key (or keep the default --host 127.0.0.1)"
        )
    # every flag is checked before the model loads
    if not 0 <= port <= 65535:
        raise MentorError(f"--port {port} is not a TCP port: use 1..65535, or 0 to pick a free one")
    for flag, value in (
        ("--max-batch-tokens", max_batch_tokens),
        ("--max-request-tokens", max_request_tokens),
        ("--max-request-mb", max_request_bytes),
    ):
        if value < 1:
            raise MentorError(f"{flag} must be at least 1")
    from mentor.models.loading import resolve_dtype

    resolve_dtype(dtype)
    check_device(device)
    tokenizer = load_tokenizer(model_path, "teacher")
    model = load_model(model_path, dtype, device, what="teacher")
    try:
        server = TeacherServer(
            model,
            tokenizer,
            model_name=served_model_name or model_path,
            host=host,
            port=port,
            api_key=api_key,
            max_batch_tokens=max_batch_tokens,
            max_request_tokens=max_request_tokens,
            max_request_bytes=max_request_bytes,
            verbose=verbose,
        )
    except OSError as exc:
        raise MentorError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    # the URL line is the contract with scripts (and tests) that start the server with --port 0
    print(f"mentor serve-teacher: serving {server.model_name} at {server.url}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.close()
