"""Remote faults: OPD through a fault-injecting TCP proxy in front of the real teacher server.

The proxy sits on 127.0.0.1 between ``HTTPTeacher`` and ``TeacherServer`` and, on a fixed schedule (the n-th
connection gets the n-th fault), resets connections, answers 500/502/503, answers too slowly, or cuts the JSON
body short (with a matching or a lying Content-Length). The client opens one connection per request, so every
fault hits exactly one request, which must be retried. A run through the proxy must end exactly where a run
against the clean server ends; a server that stays down must stop the run with one line and leave the
checkpoint written before it intact.

Exactly, bitwise: the server scores every request on its own (``ScoringEngine``), so a retried request gets the
numbers it would have got the first time whatever else was in flight. (When requests were batched together,
faults changed which ones met, and the final metrics differed in the 7th digit in 2 of 3 fresh runs.) Nothing
here depends on timing: the slow fault sleeps past a client timeout that a healthy answer is far inside, and a
spurious timeout under load would only add a retry, which changes no number.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mentor.config import DistillConfig
from mentor.errors import MentorError
from mentor.models.loading import load_model, load_tokenizer
from mentor.recipes.distill import run_distill
from mentor.serve import TeacherServer
from mentor.train.run_dir import RunDirectory, load_trainer_state

CLIENT_TIMEOUT = 2.0  # seconds: the "slow" fault answers after this, so the client gives up and retries
FAULTS = ("reset", "500", "502", "503", "slow", "truncated", "wrong_length")


def _read_message(sock: socket.socket) -> tuple[bytes, bytes]:
    """One HTTP/1.1 message (request or response) with a Content-Length body: (head, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("peer closed before the end of the headers")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("peer closed in the middle of the body")
        body += chunk
    return head, body


def _with_length(head: bytes, length: int) -> bytes:
    lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"content-length:")]
    return b"\r\n".join(lines + [b"Content-Length: %d" % length])


class FaultProxy:
    """A threaded TCP proxy that injects ``schedule[n]`` into its n-th connection (then forwards cleanly)."""

    def __init__(self, upstream_port: int, schedule: list[str] | None = None, down_when=None):
        """``down_when()``: checked at each new connection; once true, the proxy stops listening for good."""
        self.upstream_port, self.schedule, self.down_when = upstream_port, list(schedule or []), down_when
        self.injected: Counter[str] = Counter()
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def close(self) -> None:
        """Stop listening: from now on connecting is refused by the kernel (ECONNREFUSED)."""
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                index, self.connections = self.connections, self.connections + 1
                fault = self.schedule[index] if index < len(self.schedule) else "pass"
            if self.down_when is not None and self.down_when():
                client.close()
                self.close()
                return
            threading.Thread(target=self._serve, args=(client, fault), daemon=True).start()

    def _serve(self, client: socket.socket, fault: str) -> None:
        try:
            with client:
                if fault == "reset":  # RST before any answer: ConnectionResetError / RemoteDisconnected
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self._count(fault)
                    return
                request_head, request_body = _read_message(client)
                if fault in ("500", "502", "503"):
                    body = json.dumps({"error": {"message": f"injected {fault}", "code": int(fault)}}).encode()
                    head = (
                        b"HTTP/1.1 %s Injected\r\nContent-Type: application/json\r\nConnection: close" % fault.encode()
                    )
                    client.sendall(_with_length(head, len(body)) + b"\r\n\r\n" + body)
                    self._count(fault)
                    return
                head, body = self._forward(request_head, request_body)
                if fault == "slow":  # the answer comes, but after the client's timeout
                    time.sleep(CLIENT_TIMEOUT + 0.5)
                elif fault == "truncated":  # half the JSON, with a Content-Length that matches the cut
                    body = body[: len(body) // 2]
                    head = _with_length(head, len(body))
                elif fault == "wrong_length":  # half the JSON under the original Content-Length, then close
                    body = body[: len(body) // 2]
                if fault != "pass":
                    self._count(fault)
                client.sendall(head + b"\r\n\r\n" + body)
        except OSError:
            pass  # the client gave up on a slow answer: expected

    def _forward(self, head: bytes, body: bytes) -> tuple[bytes, bytes]:
        with socket.create_connection(("127.0.0.1", self.upstream_port)) as upstream:
            upstream.sendall(head + b"\r\n\r\n" + body)
            return _read_message(upstream)

    def _count(self, fault: str) -> None:
        with self._lock:
            self.injected[fault] += 1


@pytest.fixture(scope="module")
def served(tiny_dirs):
    model, tokenizer = load_model(tiny_dirs["teacher"]), load_tokenizer(tiny_dirs["teacher"])
    with TeacherServer(model, tokenizer, model_name="tiny-teacher", port=0) as running:
        yield running


def _config(
    tiny_dirs, teacher_url: str, out: Path, prompts: str, steps: int = 3, timeout: float = CLIENT_TIMEOUT
) -> DistillConfig:
    # micro_batch_size 2 -> two requests per step, so faults land on training requests, not just metadata
    return DistillConfig(
        student=tiny_dirs["student"],
        teacher=teacher_url,
        prompts=prompts,
        output_dir=str(out),
        steps=steps,
        batch_size=2,
        group_size=2,
        micro_batch_size=2,
        max_new_tokens=8,
        learning_rate=1e-3,
        seed=5,
        quiet=True,
        save_every=2,
        teacher_timeout=timeout,
    )


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "final" / "model.safetensors")


def _metrics(out: Path) -> list[dict]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith(("time_", "tokens_per_second"))} for r in records]


def test_a_run_through_injected_faults_equals_a_clean_run(tiny_dirs, served, tmp_path, prompts_file):
    clean = tmp_path / "clean"
    run_distill(_config(tiny_dirs, served.url, clean, prompts_file))

    # every fault kind, each followed by a clean connection so no request exhausts its retries
    schedule = [kind for fault in FAULTS for kind in (fault, "pass")]
    proxy = FaultProxy(served.httpd.server_address[1], schedule)
    faulty = tmp_path / "faulty"
    try:
        run_distill(_config(tiny_dirs, proxy.url, faulty, prompts_file))
    finally:
        proxy.close()

    assert proxy.connections > len(schedule), "the run ended before the schedule was played out"
    assert proxy.injected == Counter(FAULTS)  # every fault injected, and retried past
    assert _metrics(faulty) == _metrics(clean)
    expected = _weights(clean)
    for name, tensor in _weights(faulty).items():
        assert torch.equal(tensor, expected[name]), name


def test_a_server_that_stays_down_stops_the_run_with_one_line(tiny_dirs, served, tmp_path, prompts_file):
    # the server goes down for good once step 2's checkpoint is complete: a state, not a connection count,
    # so a spurious retry under load cannot move the point where it dies
    out = tmp_path / "run"
    dying = FaultProxy(
        served.httpd.server_address[1], down_when=lambda: (out / "checkpoints" / "step_00000002" / "COMPLETE").exists()
    )
    with pytest.raises(MentorError) as failure:
        run_distill(_config(tiny_dirs, dying.url, out, prompts_file, steps=4, timeout=120))
    message = str(failure.value)
    assert "\n" not in message and "failed 5 times" in message and "Connection refused" in message, message
    checkpoint = RunDirectory(out).latest_checkpoint()
    assert checkpoint.name == "step_00000002" and (checkpoint / "COMPLETE").exists()
    assert load_trainer_state(checkpoint)["step"] == 2
    assert load_file(checkpoint / "model" / "model.safetensors")
    assert not (out / "final").exists()
