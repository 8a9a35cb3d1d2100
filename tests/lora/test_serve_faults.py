"""lora.serve under faults (issue 26): strict requests, heads, option ranges, malformed and slow clients,
clients that leave, connection floods, and the drain on SIGTERM / Ctrl-C.

One in-process server (tiny BERT, adapters a, b, c, a 1 s request deadline) is shared by the raw-socket
tests; the drain tests start the command line, since what they check (the exit status, no abort) belongs
to a process."""

import json
import logging
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from conftest import tiny
from test_multi import save_adapters
from test_serve import post, reference

import experiments.serve
import lora
from experiments.models import CharTokenizer
from lora import LoRAError
from lora.serve import BatchRunner, Limits, RequestError, Server

DEADLINE_S = 1.0


def start(family: str, task: str, files: dict, base_head: bool = False, **limits) -> Server:
    model = tiny(family)
    bank = lora.multi.load(model, files)
    return Server(BatchRunner(model, CharTokenizer(128), bank, task, Limits(**limits), base_head), port=0).start()


@pytest.fixture(scope="module")
def adapters(tmp_path_factory) -> dict:
    return save_adapters("bert", tmp_path_factory.mktemp("adapters"))


@pytest.fixture(scope="module")
def server(adapters):
    server = start("bert", "classify", adapters, request_timeout_s=DEADLINE_S, max_wait_s=0.05)
    yield server
    server.stop()


def address(server) -> tuple[str, int]:
    return server.httpd.server_address[:2]


def exchange(server, data: bytes, end: bool = False) -> tuple[list[int], dict, bytes]:
    """Send raw bytes (`end`: then end the sending side) and read until the server closes the connection (a
    socket timeout fails the test: the server kept it open). Returns every status line's code, the first
    answer's headers and what follows them."""
    with socket.create_connection(address(server), timeout=5) as s:
        s.sendall(data)
        if end:
            s.shutdown(socket.SHUT_WR)
        reply = b"".join(iter(lambda: s.recv(65536), b""))
    statuses = [int(line.split()[1]) for line in reply.split(b"\r\n") if line.startswith(b"HTTP/1.")]
    head, _, body = reply.partition(b"\r\n\r\n")
    headers = dict(line.split(": ", 1) for line in head.decode("latin-1").split("\r\n")[1:] if ": " in line)
    return statuses, headers, body


def request(body: bytes, *headers: str, method: str = "POST", path: str = "/classify") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: x", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body  # HTTP headers are latin-1


def assert_one_json_error(statuses, headers, body, status, message):
    assert statuses == [status], statuses  # one answer, then the connection closed: no HTML 400 after it
    assert headers["Content-Type"] == "application/json", (headers, body)
    error = json.loads(body)["error"]
    assert message in error and "\n" not in error, error


# --- requests: unknown and repeated fields, no adapter (silent wrong answers before) ------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"adaptor": "a", "text": "hi"}, "unknown field 'adaptor'; POST /classify reads 'text', 'adapter'"),
        ({"adapter": "a", "text": "hi", "max_new_tokens": 4}, "unknown field 'max_new_tokens'"),
        ({"adapter": "a", "text": "hi", "labels": [1]}, "unknown field 'labels'"),
        ({"text": "hi"}, 'name an "adapter" (a, b, c)'),  # the base model's head is untrained: no answer from it
        ({"adapter": None, "text": "hi"}, 'name an "adapter"'),
    ],
)
def test_unknown_fields_and_no_adapter_are_400(server, body, message):
    status, answer = post(server.url + "/classify", body)
    assert (status, message in answer["error"]) == (400, True), answer


def test_a_misspelt_generation_field_is_400_not_32_tokens(tmp_path):
    files = save_adapters("llama", tmp_path)
    model = tiny("llama")
    engine = BatchRunner(model, CharTokenizer(128), lora.multi.load(model, files), "generate", Limits())
    with pytest.raises(RequestError, match="unknown field 'max_tokens'; POST /generate reads 'prompt', 'adapter', "):
        engine.parse("/generate", {"prompt": "hi", "adapter": "a", "max_tokens": 4})
    assert engine.parse("/generate", {"prompt": "hi", "max_new_tokens": 4})["max_new_tokens"] == 4


def test_a_field_given_twice_is_400(server):
    raw = b'{"adapter": "a", "text": "hi", "adapter": "b"}'  # json.loads would keep "b" silently
    status, answer = post(server.url + "/classify", None, raw)
    assert (status, "field 'adapter' is given twice" in answer["error"]) == (400, True), answer


# --- heads: an adapter saved without one is refused for classification, unless the base head is given ------


@pytest.fixture(scope="module")
def headless(tmp_path_factory):
    folder = tmp_path_factory.mktemp("headless")
    model = lora.apply(tiny("bert"), lora.LoRAConfig(r=2, targets=("q", "v"), train_head=False))
    lora.save(model, folder / "nohead")
    return folder


def test_an_adapter_without_a_head_is_refused_at_start(headless, capsys):
    bank = lora.multi.load(tiny("bert"), {"nohead": headless / "nohead"})
    with pytest.raises(LoRAError, match="adapter 'nohead' has no classifier head .* give --base-head"):
        BatchRunner(bank.model, CharTokenizer(128), bank, "classify", Limits())
    argv = ["--model", "tiny_bert", "--adapters", str(headless), "--port", "0"]
    assert experiments.serve.main(argv) == 2
    err = capsys.readouterr().err
    assert "adapter 'nohead' has no classifier head" in err and len(err.strip().splitlines()) == 1, err


def test_base_head_is_refused_for_a_model_whose_classifier_is_new(headless, capsys):
    argv = ["--model", "minilm_l6", "--adapters", str(headless), "--port", "0", "--base-head"]
    assert experiments.serve.main(argv) == 2
    err = capsys.readouterr().err
    assert "--base-head: model 'minilm_l6' holds no trained classifier" in err and len(err.splitlines()) == 1, err


def test_base_head_serves_an_adapter_without_a_head_with_the_base_head(headless):
    server = start("bert", "classify", {"nohead": headless / "nohead"}, base_head=True)
    try:
        status, answer = post(server.url + "/classify", {"text": "a film", "adapter": "nohead"})
    finally:
        server.stop()
    ids = CharTokenizer(128)("a film")["input_ids"][0]
    with torch.no_grad():
        expected = lora.load(tiny("bert"), headless / "nohead")(input_ids=ids[None]).logits[0]
    assert status == 200
    torch.testing.assert_close(torch.tensor(answer["logits"]), expected, atol=1e-5, rtol=1e-5)


# --- options: every number validated for range and sign, one line ------------------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--port", "70000"),
        ("--port", "-1"),
        ("--port", "80.5"),
        ("--max-batch", "0"),
        ("--max-wait-ms", "-1"),
        ("--max-wait-ms", "nan"),
        ("--max-new-tokens", "0"),
        ("--num-labels", "-2"),
        ("--request-timeout", "inf"),
        ("--max-connections", "0"),
    ],
)
def test_bad_option_values_are_one_line(capsys, option, value):
    argv = ["--model", "tiny_bert", "--adapters", "/nonexistent", option, value]
    with pytest.raises(SystemExit) as exit:
        experiments.serve.main(argv)
    err = capsys.readouterr().err
    assert exit.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"error: argument {option}: ") and value in err, err


def test_limits_are_checked_in_the_library_too():
    with pytest.raises(LoRAError, match="Limits.max_batch=0; give an integer from 1 to 4096"):
        Limits(max_batch=0)
    with pytest.raises(LoRAError, match="Limits.request_timeout_s=nan"):
        Limits(request_timeout_s=float("nan"))


# --- malformed headers: 400 (or 411, 431, 501) with one JSON line, never 500, never HTML -------------------


MALFORMED = [  # (what the client sends, status, part of the error); the client then ends its side
    (request(b"{}", "Content-Length: \u00b2"), 400, "Content-Length must be"),  # before: a 500
    (request(b"{}", "Content-Length: -1"), 400, "Content-Length must be"),
    (request(b"{}", "Content-Length: 2", "Content-Length: 3"), 400, "Content-Length must be"),  # smuggling
    (request(b"{}", "Content-Length: 0x2"), 400, "Content-Length must be"),
    (request(b"2\r\n{}\r\n0\r\n\r\n", "Transfer-Encoding: chunked"), 411, "chunked bodies are not read"),
    (request(b'{"text"', "Content-Length: 50"), 400, "ended after 7 of 50 bytes"),
    (b"GARBAGE\r\n\r\n", 400, "Bad request syntax ('GARBAGE')"),
    (b"GET /adapters HTTP/9.9\r\n\r\n", 505, "Invalid HTTP version"),
    (request(b"", method="PUT"), 501, "Unsupported method ('PUT'); this server answers GET /adapters"),
    (request(b"", method="DELETE", path="/adapters"), 501, "Unsupported method"),
]


@pytest.mark.parametrize(("data", "status", "message"), MALFORMED)
def test_malformed_requests_are_one_json_line(server, data, status, message):
    assert_one_json_error(*exchange(server, data, end=True), status, message)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"text": "a", "adapter": "a", "n": ' + b"1" * 5000 + b"}", "not JSON this server reads"),  # before: a 500
        (b'{"text": "a\\ud800", "adapter": "a"}', "lone surrogate"),  # before: 200, the tokenizer's guess
    ],
)
def test_bodies_json_reads_but_a_server_cannot_are_400(server, raw, message):
    status, answer = post(server.url + "/classify", None, raw)
    assert (status, message in answer["error"]) == (400, True), answer


def test_a_body_too_large_is_refused_before_it_is_invited(server):
    statuses, headers, body = exchange(server, request(b"", "Content-Length: 999999999", "Expect: 100-continue"))
    assert_one_json_error(statuses, headers, body, 413, "at most 65536")  # before: "100 Continue", then 413


def test_too_many_headers_is_431_json(server):
    statuses, headers, body = exchange(server, request(b"")[:-2] + b"".join(b"X-%d: y\r\n" % i for i in range(101)))
    assert_one_json_error(statuses, headers, body, 431, "Too many headers (got more than 100 headers)")


def test_a_get_with_a_body_does_not_smuggle_a_second_request(server):
    hidden = request(b'{"text": "hi", "adapter": "a"}', "Content-Length: 30")
    statuses, _, body = exchange(server, request(hidden, f"Content-Length: {len(hidden)}", method="GET", path="/stats"))
    assert statuses == [200] and "batches" in json.loads(body)  # the hidden POST is never run


# --- slow and idle clients: one deadline for a whole request -------------------------------------------------


def test_slowloris_is_closed_within_the_deadline(server):
    """One byte every 0.2 s: each read is quick, so only a deadline for the whole request closes it."""
    data = request(b'{"text": "hi", "adapter": "a"}', "Content-Length: 30")
    begin = time.monotonic()
    with socket.create_connection(address(server), timeout=5) as s:
        for byte in data:
            s.sendall(bytes([byte]))
            if select.select([s], [], [], 0.2)[0]:  # the server answered, or closed
                break
        else:
            pytest.fail("the whole request trickled in: the server never closed the slow connection")
        reply = b"".join(iter(lambda: s.recv(65536), b""))
    took = time.monotonic() - begin
    assert DEADLINE_S * 0.9 < took < DEADLINE_S + 2.0, took
    assert reply.startswith(b"HTTP/1.1 408") and b"did not arrive in time" in reply, reply


def test_an_idle_connection_is_closed_at_the_deadline_and_the_server_serves_on(server):
    begin = time.monotonic()
    with socket.create_connection(address(server), timeout=5) as idle:
        assert idle.recv(4096) == b""  # closed without an answer: no request had begun
    assert time.monotonic() - begin < DEADLINE_S + 2.0
    assert post(server.url + "/classify", {"text": "still fine", "adapter": "b"})[0] == 200


# --- a client that leaves: one log line, no traceback ------------------------------------------------------


def test_a_client_that_leaves_is_one_log_line(server, caplog, capfd):
    caplog.set_level(logging.INFO, logger="lora.serve")
    for _ in range(3):
        s = socket.create_connection(address(server))
        s.sendall(request(b'{"text": "hi", "adapter": "a"}', "Content-Length: 30"))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
        s.close()
    for _ in range(100):
        if len([r for r in caplog.records if "left before its answer" in r.getMessage()]) == 3:
            break
        time.sleep(0.05)
    left = [r.getMessage() for r in caplog.records if "left before its answer" in r.getMessage()]
    assert len(left) == 3, [r.getMessage() for r in caplog.records]
    assert "Traceback" not in capfd.readouterr().err and not any(r.exc_info for r in caplog.records)


# --- connection floods and keep-alive ------------------------------------------------------------------------


def test_connections_past_the_cap_get_503_and_a_drain_closes_idle_keep_alive(adapters):
    server = start("bert", "classify", adapters, max_connections=4, request_timeout_s=30.0)
    held = [socket.create_connection(address(server), timeout=5) for _ in range(4)]
    try:
        time.sleep(0.2)  # let the server take the four
        assert_one_json_error(*exchange(server, b""), 503, "too many connections")
        body = b'{"text": "x", "adapter": "a"}'
        held[0].sendall(request(body, f"Content-Length: {len(body)}") * 3)  # three requests in one write, kept alive
        replies = b""
        while replies.count(b'"logits"') < 3:
            replies += held[0].recv(65536)
        begin = time.monotonic()
    finally:
        server.stop()  # the four idle connections (30 s deadline) must not hold the drain
    assert time.monotonic() - begin < 5
    assert [s.recv(4096) for s in held] == [b""] * 4
    for s in held:
        s.close()


# --- the drain: SIGTERM or Ctrl-C answers every request in flight and exits 0 -------------------------------


def _serve_command(folder, *extra) -> list[str]:
    return [sys.executable, "-m", "experiments.serve", "--model", "tiny_bert", "--adapters", str(folder),
            "--port", "0", "--max-batch", "200", "--max-wait-ms", "30000", *extra]  # fmt: skip


def test_sigterm_and_ctrl_c_drain_every_request_in_flight_and_exit_0(adapters, tmp_path):
    """64 clients (SIGTERM) and 16 (SIGINT) with requests held in the batcher (it waits 30 s to fill a batch of
    200), the signal, then every request answered as its adapter alone answers, and exit status 0."""
    folder = tmp_path / "adapters"
    folder.mkdir()
    for name, path in adapters.items():
        (folder / f"{name}.safetensors").write_bytes(path.read_bytes())
    runs = {signal.SIGTERM: 64, signal.SIGINT: 16}
    procs = {
        sig: subprocess.Popen(_serve_command(folder), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for sig in runs
    }
    try:
        results = {sig: _drain(procs[sig], sig, n) for sig, n in runs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    tok = CharTokenizer(128)
    for sig, (code, err, texts, answers) in results.items():
        assert code == 0, (sig, err)
        assert "Traceback" not in err and "terminate called" not in err, err
        assert len(answers) == runs[sig]
        for (text, name), (status, answer) in zip(texts, answers, strict=True):
            assert status == 200, (sig, answer)
            expected = reference("bert", adapters, name, tok(text)["input_ids"][0])
            torch.testing.assert_close(torch.tensor(answer["logits"]), expected, atol=1e-5, rtol=1e-5)


def _drain(proc, sig, n):
    line = proc.stdout.readline()
    assert line.startswith("serving 3 adapters"), line + proc.stderr.read()
    url = line.split(" on ")[1].strip()
    texts = [(f"text {i} " + "ab" * (i % 7), "abc"[i % 3]) for i in range(n)]
    with ThreadPoolExecutor(n) as pool:
        answers = [pool.submit(post, url + "/classify", {"text": t, "adapter": a}) for t, a in texts]
        for _ in range(600):  # until all n are in the server, held by the batcher
            if _in_flight(url) == n:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"only {_in_flight(url)} of {n} requests reached the server")
        begin = time.monotonic()
        os.kill(proc.pid, sig)
        answers = [a.result(timeout=60) for a in answers]
    code = proc.wait(timeout=60)
    assert time.monotonic() - begin < 20  # drained at once, not after the batcher's 30 s wait
    return code, proc.stderr.read(), texts, answers


def _in_flight(url) -> int:
    from test_serve import get

    return get(url + "/stats")[1]["in_flight"]


def test_server_stop_waits_for_a_request_being_computed(adapters):
    """The library's drain (`Server.stop`, what the signals call) with a slow model: the answer still comes."""
    server = start("bert", "classify", adapters)
    run, started = server.engine.run, threading.Event()

    def slow(requests):
        started.set()
        time.sleep(0.5)
        return run(requests)

    server.engine.run = slow
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(post, server.url + "/classify", {"text": "slow", "adapter": "c"})
        assert started.wait(10)
        server.stop()
        assert answer.result(timeout=10)[0] == 200
