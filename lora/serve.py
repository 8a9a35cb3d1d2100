"""Serve many adapters over one base model on localhost, batching requests across adapters.

    python -m lora.serve --base /path/to/hf/folder --task generate --adapters DIR --port 8000
    python -m experiments.serve --model minilm_l6 --task classify --adapters runs/adapters/

The library serves the model it is given (`serve(args, load_model)`, `load_model()` giving the model and
tokenizer); this module's command line loads a transformers folder, `experiments.serve` builds one of this
repository's model configs.

    curl -s localhost:8000/classify -d '{"adapter": "sst2", "text": "a gripping film"}'
    curl -s localhost:8000/generate -d '{"adapter": "e2e", "prompt": "name[Aromi]", "max_new_tokens": 32}'

The adapter folder holds ``NAME.safetensors`` files, or ``NAME/`` folders with an adapter (ours or
PEFT's); NAME is the name requests use. Requests name adapters only, never paths, and only the
adapters loaded at start exist: no request can reach the file system.

Requests that arrive within ``--max-wait-ms`` of each other (up to ``--max-batch``) run as one
batch through `lora.multi` (rows of different adapters together). Generation is greedy, so a row's
answer does not depend on the others in its batch (nor on their ``max_new_tokens``).

Endpoints: ``POST /classify`` {"text", "adapter"} -> {"label", "logits"}; ``POST /generate``
{"prompt", "adapter", "max_new_tokens"} -> {"text", "tokens"}; ``GET /adapters``; ``GET /stats``.
Bad requests get a 4xx answer with {"error": one line}, never HTML: 400 malformed (an unknown or
repeated field, a bad header), 404 unknown adapter or path, 408 too slow, 411 no Content-Length,
413 too large.

Heads: a classifier is only as good as its head. For ``classify`` every adapter must carry its own
head (``train_head=True``, the default), and a request without an adapter is refused, unless the
server is told that the base model's own classifier is trained (``--base-head``, `BatchRunner`'s
``base_head=True``); then adapters without a head, and requests without an adapter, use it. Without
this, an adapter saved without its head was served with the base model's freshly initialized
head: another label after each restart.

Faults: each request (request line, headers and body) must arrive within ``--request-timeout``
seconds of the server starting to wait for it (an idle keep-alive connection too), however slowly
its bytes trickle in; then the connection is closed (a 408 if part of a request came). On SIGTERM or
Ctrl-C the server drains: it stops accepting, answers every request it has begun to receive, closes
idle connections, and exits 0; a second signal ends it at once. A client that leaves before its
answer is one log line.

The HTTP layer is the standard library's ThreadingHTTPServer: a localhost research server needs
JSON over POST and nothing a web framework would add, and it keeps the install as it is.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import queue
import re
import signal
import socket
import sys
import threading
import time
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch
from torch import nn

from .config import LoRAError
from .model import max_positions
from .multi import NAME, AdapterBank, HeadBank, load
from .padding import pad

log = logging.getLogger("lora.serve")
TASKS = ("classify", "generate")


class RequestError(Exception):
    """A request the server refuses: an HTTP status and one line saying why."""

    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Limits:
    max_body: int = 64 * 1024  # bytes of one request
    max_tokens: int = 512  # tokens of one text or prompt
    max_new_tokens: int = 256
    max_batch: int = 32
    max_wait_s: float = 0.01
    request_timeout_s: float = 30.0  # a whole request (line, headers, body), or an idle connection, this long
    max_connections: int = 512  # open connections; more are answered 503 at once (each holds a thread)

    def __post_init__(self):
        for name, (low, high) in RANGES.items():
            value, kind = getattr(self, name), type(low)  # an int range takes integers only
            if isinstance(value, bool) or not isinstance(value, int | kind) or not low <= value <= high:
                raise LoRAError(f"Limits.{name}={value!r}; give {_KIND[kind]} from {low} to {high}")


_KIND = {int: "an integer", float: "a number"}
# Every limit's range: a zero or negative one would refuse everything or wait for ever, a huge one is a typo.
RANGES = {
    "max_body": (1, 2**30),
    "max_tokens": (1, 10**6),
    "max_new_tokens": (1, 10**5),
    "max_batch": (1, 4096),
    "max_wait_s": (0.0, 60.0),
    "request_timeout_s": (0.001, 3600),
    "max_connections": (1, 65536),
}


@dataclass
class Stats:
    batches: int = 0
    rows: int = 0
    largest_batch: int = 0
    most_adapters_in_a_batch: int = 0
    in_flight: int = 0  # POST requests received and not yet answered
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, names: list[str | None]):
        with self.lock:
            self.batches += 1
            self.rows += len(names)
            self.largest_batch = max(self.largest_batch, len(names))
            self.most_adapters_in_a_batch = max(self.most_adapters_in_a_batch, len(set(names)))

    def begin(self, step: int = 1):
        with self.lock:
            self.in_flight += step

    def as_dict(self) -> dict:
        with self.lock:
            return {k: v for k, v in vars(self).items() if k != "lock"}


class BatchRunner:
    """Runs batches of parsed requests on the model: the part of the server that is not HTTP."""

    def __init__(
        self, model: nn.Module, tokenizer, bank: AdapterBank, task: str, limits: Limits, base_head: bool = False
    ):
        """`base_head`: the base model's own classifier is trained, so adapters without a head (and requests
        without an adapter) may use it; otherwise (classify) an adapter without a head is refused here."""
        if task not in TASKS:
            raise LoRAError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
        self.model, self.tokenizer, self.bank, self.task, self.limits = model.eval(), tokenizer, bank, task, limits
        self.base_head = base_head
        if task == "classify" and not base_head and (headless := without_head(bank)):
            raise LoRAError(
                f"adapter {headless[0]!r} has no classifier head (saved with train_head=False), and this base "
                "model's head is untrained (a new random one at each start); save the adapter with its head, "
                "or give --base-head if the base model's own classifier is trained"
            )
        self.stats = Stats()
        self.device = next(model.parameters()).device
        self.positions = max_positions(model.config)  # a longer input would fail its whole batch

    def fields(self) -> tuple[str, ...]:
        """The fields a request body may hold."""
        key = "text" if self.task == "classify" else "prompt"
        return (key, "adapter", "max_new_tokens") if self.task == "generate" else (key, "adapter")

    def parse(self, path: str, body: dict) -> dict:
        """Check one request against the task and limits; returns what `run` needs."""
        if path != f"/{self.task}":
            raise RequestError(HTTPStatus.NOT_FOUND, f"no endpoint {path}; this server answers POST /{self.task}")
        fields = self.fields()
        unknown = [k for k in body if k not in fields]
        if unknown:  # a misspelt "adaptor" must not fall back to the base model, nor "max_tokens" to 32
            raise RequestError(
                HTTPStatus.BAD_REQUEST,
                f"unknown field {unknown[0]!r}; POST /{self.task} reads {', '.join(repr(f) for f in fields)}",
            )
        key = fields[0]
        text, adapter = body.get(key), body.get("adapter")
        if not isinstance(text, str) or not text:
            raise RequestError(HTTPStatus.BAD_REQUEST, f'"{key}" must be a non-empty string')
        if not _is_unicode(text):  # JSON's "\ud800" escapes: a tokenizer may fail on them, or read them wrong
            raise RequestError(HTTPStatus.BAD_REQUEST, f'"{key}" holds a lone surrogate (\\ud800-\\udfff); send text')
        if adapter is not None and (not isinstance(adapter, str) or adapter not in self.bank.names):
            known = ", ".join(self.bank.names)
            raise RequestError(HTTPStatus.NOT_FOUND, f"unknown adapter {adapter!r}; this server holds {known}")
        if adapter is None and self.task == "classify" and not self.base_head:
            raise RequestError(
                HTTPStatus.BAD_REQUEST,
                f'name an "adapter" ({", ".join(self.bank.names)}): the base model\'s own classifier is untrained '
                "(start the server with --base-head if it is trained)",
            )
        ids = self.tokenizer(text, return_tensors="pt")["input_ids"][0]
        request = {"ids": ids, "adapter": adapter, "max_new_tokens": 0}
        if self.task == "generate":
            n = body.get("max_new_tokens", 32)
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise RequestError(HTTPStatus.BAD_REQUEST, '"max_new_tokens" must be a positive integer')
            if n > self.limits.max_new_tokens:
                raise RequestError(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    f"max_new_tokens {n}; at most {self.limits.max_new_tokens}",
                )
            request["max_new_tokens"] = n
        room = min(self.limits.max_tokens, self.positions - request["max_new_tokens"])
        if len(ids) > room:
            also = f" with {request['max_new_tokens']} new" if request["max_new_tokens"] else ""
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"{len(ids)} tokens{also}; at most {room}")
        return request

    @torch.no_grad()
    def run(self, requests: list[dict]) -> list[dict]:
        names = [r["adapter"] for r in requests]
        self.stats.add(names)
        left = self.task == "generate"  # decoder prompts are padded on the left, so they end together
        ids, mask = pad([r["ids"] for r in requests], self.pad_id, left=left)
        ids, mask = ids.to(self.device), mask.to(self.device)
        with self.bank.rows(names):
            if self.task == "classify":
                logits = self.model(input_ids=ids, attention_mask=mask).logits.float().cpu()
                return [{"label": int(row.argmax()), "logits": row.tolist()} for row in logits]
            out = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max(r["max_new_tokens"] for r in requests),
                do_sample=False,
                num_beams=1,
                pad_token_id=self.pad_id,
            )
        new = out[:, ids.shape[1] :].cpu()
        return [self.answer(row, r["max_new_tokens"]) for row, r in zip(new, requests, strict=True)]

    def answer(self, new_tokens: torch.Tensor, limit: int) -> dict:
        tokens = new_tokens.tolist()[:limit]
        eos = getattr(self.tokenizer, "eos_token_id", None)
        if eos in tokens:
            tokens = tokens[: tokens.index(eos)]
        return {"text": self.tokenizer.decode(tokens, skip_special_tokens=True), "tokens": tokens}

    @property
    def pad_id(self) -> int:
        pad = getattr(self.tokenizer, "pad_token_id", None)
        return pad if pad is not None else getattr(self.tokenizer, "eos_token_id", 0) or 0


_FLUSH = object()  # in the queue: run what has been collected now, without waiting for more


class Batcher:
    """Collects requests from many HTTP threads into batches for one worker thread."""

    def __init__(self, engine: BatchRunner, limits: Limits):
        self.engine, self.limits = engine, limits
        self.queue: queue.Queue = queue.Queue()
        self.draining = False
        self.thread = threading.Thread(target=self._loop, name="batcher", daemon=True)
        self.thread.start()

    def submit(self, request: dict) -> dict:
        future: Future = Future()
        self.queue.put((request, future))
        return future.result()

    def flush(self):
        """No request is coming any more (the server drains): run each batch without waiting for more."""
        self.draining = True
        self.queue.put(_FLUSH)

    def stop(self):
        self.queue.put(None)
        self.thread.join()

    def _loop(self):
        while (first := self.queue.get()) is not None:
            if first is _FLUSH:
                continue
            items = [first]
            deadline = time.monotonic() + (0 if self.draining else self.limits.max_wait_s)
            while len(items) < self.limits.max_batch:
                wait = deadline - time.monotonic()  # once past it, take only what is queued already
                try:
                    item = self.queue.get(timeout=wait) if wait > 0 else self.queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self.queue.put(None)  # stop after this batch
                    break
                if item is _FLUSH:
                    break
                items.append(item)
            self._answer(items)

    def _answer(self, items: list):
        """Run the batch; if it fails, run its requests one by one, so that only a request that fails alone
        hears of the failure and its neighbours get their answers."""
        try:
            results = self.engine.run([r for r, _ in items])
        except Exception as err:  # one bad request must not fail the others, nor kill the server
            if len(items) > 1:
                log.warning("a batch of %d failed (%s); running its requests one by one", len(items), err)
                for item in items:
                    self._answer([item])
                return
            log.exception("request failed")
            items[0][1].set_exception(err)
            return
        for (_, future), result in zip(items, results, strict=True):
            future.set_result(result)


class Server:
    """The HTTP front of a `BatchRunner`; ``port=0`` picks a free port (see `.url`)."""

    def __init__(self, engine: BatchRunner, host: str = "127.0.0.1", port: int = 8000):
        self.engine = engine
        self.batcher = Batcher(engine, engine.limits)
        self.httpd = _HTTPServer((host, port), _handler(self), engine.limits.max_connections)
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="http", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Server:
        self.thread.start()
        return self

    def stop(self):
        """Drain: stop accepting, answer every request begun (their connections then close), close idle
        connections, and return once every connection's thread and the batcher have finished."""
        if self.httpd.draining:
            return  # stopped already
        self.httpd.draining = True
        self.batcher.flush()
        if self.thread.is_alive():
            self.httpd.shutdown()  # serve_forever returns: nothing new is accepted
        self.httpd.accept_waiting()
        self.httpd.close_idle()
        self.httpd.server_close()  # closes the listening socket and joins every connection's thread
        self.batcher.stop()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc):
        self.stop()


_LINGER_S, _LINGER_BYTES = 0.5, 1 << 20  # how long, and how much, a closing connection is read to its end


class _DeadlineReader(io.RawIOBase):
    """A connection's input with one deadline for a whole request, however slowly its bytes come.

    The standard library's handler reads through a socket timeout that restarts at every read, so a
    client sending a byte every few seconds holds its connection (and thread) for ever. Here each read
    waits only for what is left of the request's deadline (`start` sets it for each request)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.deadline = math.inf
        self.received = 0  # bytes of the current request so far
        self.idle = False  # blocked waiting for the first byte of a request (what a drain may close)
        self.expired = False

    def start(self, seconds: float):
        self.deadline, self.received, self.expired = time.monotonic() + seconds, 0, False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            self.expired = True
            raise TimeoutError("the request did not arrive before its deadline")
        self.sock.settimeout(left)
        self.idle = self.received == 0
        try:
            n = self.sock.recv_into(buffer)
        except TimeoutError:
            self.expired = True
            raise
        finally:
            self.idle = False
        self.received += n
        return n


class _HTTPServer(ThreadingHTTPServer):
    """A thread per connection, up to `max_connections` (a connection flood would otherwise start a thread
    per connection without bound), and a listen backlog for many clients at once (the standard library's 5
    reset 10-13% of 64 concurrent connections). `server_close` joins the connections' threads (the
    standard library's `block_on_close`): that is how a drain waits for their answers."""

    daemon_threads = True  # should a drain be cut short (a second signal), the process still exits
    request_queue_size = 256

    def __init__(self, address, handler, max_connections: int):
        super().__init__(address, handler)
        self.max_connections = max_connections
        self.draining = False
        self.handlers: set = set()  # the live handlers, for `close_idle`
        self.lock = threading.Lock()
        self.open_connections = 0

    def process_request(self, request, client_address):
        with self.lock:
            full = self.open_connections >= self.max_connections
            self.open_connections += not full
        if full:
            log.warning("refused a connection from %s: %d open already", client_address[0], self.max_connections)
            _refuse(request, HTTPStatus.SERVICE_UNAVAILABLE, "too many connections; try again later")
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.lock:
                self.open_connections -= 1

    def handle_error(self, request, client_address):
        """One line for a client that left or stalled; a traceback only for a fault of this server."""
        err = sys.exc_info()[1]
        if isinstance(err, ConnectionError | TimeoutError):
            log.info("client %s left before its answer (%s)", client_address[0], type(err).__name__)
        else:
            log.exception("error on a connection from %s", client_address[0])

    def shutdown_request(self, request):
        """Close gently: after the answer, read what the client had sent past it (a refused request's
        unread body), for a moment, until it closes too. Closing with unread bytes makes the kernel reset
        the connection, and the client may then lose the answer it was sent (Apache's "lingering close")."""
        with contextlib.suppress(OSError):
            request.shutdown(socket.SHUT_WR)
            end, left = time.monotonic() + _LINGER_S, _LINGER_BYTES
            while left > 0 and (wait := end - time.monotonic()) > 0:
                request.settimeout(wait)
                if not (chunk := request.recv(65536)):
                    break
                left -= len(chunk)
        self.close_request(request)

    def accept_waiting(self):
        """Connections the kernel took before the drain began are served too: take them off the listen queue."""
        self.socket.setblocking(False)
        while True:
            try:
                request, address = self.get_request()
            except OSError:  # BlockingIOError: the queue is empty
                return
            request.setblocking(True)
            self.process_request(request, address)

    def close_idle(self):
        """End the connections waiting for a request that has not begun (keep-alive): nothing is in flight there."""
        with self.lock:
            handlers = list(self.handlers)
        for handler in handlers:
            if handler.reader.idle:
                with contextlib.suppress(OSError):  # closed already
                    handler.connection.shutdown(socket.SHUT_RD)  # its read returns at once with nothing


def _refuse(sock: socket.socket, status: HTTPStatus, message: str):
    """Answer on a connection no handler will read (the server is full), without waiting on the client: this
    runs in the accepting thread."""
    body = json.dumps({"error": message}).encode()
    head = f"HTTP/1.1 {status.value} {status.phrase}\r\nContent-Type: application/json\r\n"
    head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    with contextlib.suppress(OSError):
        sock.settimeout(0.1)
        sock.sendall(head.encode() + body)
        sock.shutdown(socket.SHUT_WR)
        sock.setblocking(False)
        while sock.recv(65536):  # what the client sent already: unread, it would reset the connection
            pass
    sock.close()


def _handler(server: Server) -> type[BaseHTTPRequestHandler]:
    engine, limits = server.engine, server.engine.limits

    class Handler(BaseHTTPRequestHandler):
        """The standard library's request parsing, with a deadline per request, JSON errors, and drains."""

        protocol_version = "HTTP/1.1"
        timeout = None  # the deadline reader sets each read's timeout; `_send` each write's

        def setup(self):
            super().setup()
            self.rfile.close()  # the standard library's reader, replaced by one with a whole-request deadline
            self.reader = _DeadlineReader(self.connection)
            self.rfile = io.BufferedReader(self.reader)
            self.requests, self.answered = 0, False
            with self.server.lock:
                self.server.handlers.add(self)

        def finish(self):
            with self.server.lock:
                self.server.handlers.discard(self)
            super().finish()

        def handle_one_request(self):
            self.reader.start(limits.request_timeout_s)
            self.answered = False
            if self.server.draining and self.requests:  # a drain answers what has begun, not what may come
                self.close_connection = True
                return
            self.requests += 1
            self.requestline, self.command = "", ""  # as the standard library leaves them, should the line not come
            super().handle_one_request()  # on a read past the deadline: logs, and closes the connection
            if self.reader.expired and self.reader.received and not self.answered:
                log.info("closed a connection from %s: its request did not arrive in time", self.client_address[0])
                with contextlib.suppress(OSError):  # the slow client may be gone
                    self.send_error(HTTPStatus.REQUEST_TIMEOUT, "the request did not arrive in time")

        def handle_expect_100(self) -> bool:
            """Invite the body ("100 Continue") only if it will be read: a body too large gets its 413 at once,
            before the client sends it."""
            length = self.headers.get("Content-Length", "").strip()
            if re.fullmatch(r"[0-9]{1,15}", length) and int(length) <= limits.max_body:
                return super().handle_expect_100()
            return True  # no invitation; `do_POST` refuses the request

        def do_GET(self):
            if self.headers.get("Content-Length", "0").strip() != "0" or "Transfer-Encoding" in self.headers:
                self.close_connection = True  # a body this server does not read must not be taken for a request
            if self.path == "/adapters":
                self._send(HTTPStatus.OK, {"adapters": list(engine.bank.names), "task": engine.task})
            elif self.path == "/stats":
                self._send(HTTPStatus.OK, engine.stats.as_dict())
            else:
                self._send(HTTPStatus.NOT_FOUND, {"error": f"no endpoint {self.path}; GET /adapters or /stats"})

        def do_POST(self):
            engine.stats.begin()
            try:
                self._send(*self._answer())
            finally:
                engine.stats.begin(-1)

        def _answer(self) -> tuple[HTTPStatus, dict]:
            try:
                request = engine.parse(self.path, self._body())
                return HTTPStatus.OK, server.batcher.submit(request)
            except RequestError as err:
                return err.status, {"error": str(err)}
            except ConnectionError:
                raise  # the client left: nothing to answer (one log line, `handle_error`)
            except Exception as err:  # the model failed on this request alone (see `Batcher._answer`)
                return HTTPStatus.INTERNAL_SERVER_ERROR, {"error": " ".join(f"{type(err).__name__}: {err}".split())}

        def _body(self) -> dict:
            if "Transfer-Encoding" in self.headers:
                self.close_connection = True  # its unread body must not be taken for the next request
                raise RequestError(
                    HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length (chunked bodies are not read)"
                )
            lengths = {v.strip() for v in self.headers.get_all("Content-Length") or ()}
            if not lengths:
                raise RequestError(HTTPStatus.LENGTH_REQUIRED, "send a JSON body with a Content-Length")
            length = lengths.pop()
            if lengths or not re.fullmatch(r"[0-9]{1,15}", length):  # ASCII digits: str.isdigit takes "²"
                self.close_connection = True
                raise RequestError(HTTPStatus.BAD_REQUEST, "Content-Length must be one number of bytes")
            if int(length) > limits.max_body:
                self.close_connection = True  # the unread body must not be taken for the next request
                raise RequestError(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body of {int(length)} bytes; at most {limits.max_body}"
                )
            try:
                raw = self.rfile.read(int(length))
            except TimeoutError:
                self.close_connection = True
                raise RequestError(HTTPStatus.REQUEST_TIMEOUT, "the body did not arrive in time") from None
            if len(raw) < int(length):
                self.close_connection = True
                raise RequestError(HTTPStatus.BAD_REQUEST, f"the body ended after {len(raw)} of {length} bytes")
            return _json_object(raw)

        def _send(self, status: HTTPStatus, payload: dict):
            data = json.dumps(payload).encode()
            self.connection.settimeout(limits.request_timeout_s)  # a client that never reads must not hold us
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if self.close_connection or self.server.draining:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def send_response(self, code, message=None):
            self.answered = True
            super().send_response(code, message)

        def send_error(self, code, message=None, explain=None):
            """The standard library's refusals (a bad request line, a header too long, too many headers, an
            unknown method) as one JSON line, not an HTML page, and the connection closed: what follows a
            malformed request cannot be trusted."""
            text = message or HTTPStatus(code).phrase
            if explain:
                text += f" ({explain})"
            if code == HTTPStatus.NOT_IMPLEMENTED:
                text += f"; this server answers GET /adapters, GET /stats and POST /{engine.task}"
            self.close_connection = True
            self.request_version = self.protocol_version  # a line without a version is no HTTP/0.9 client: say why
            self._send(HTTPStatus(code), {"error": " ".join(text.split())})

        def log_message(self, format, *args):
            log.debug("%s " + format, self.address_string(), *args)

    return Handler


def _json_object(raw: bytes) -> dict:
    """A request body as a JSON object, refused (400) if it is not one, or if a field is given twice (the
    json module keeps the last: which one a client meant is a guess)."""
    try:
        body = json.loads(raw, object_pairs_hook=_no_repeated_fields)
    except ValueError as err:  # not JSON, not UTF-8, or a number of more than 4300 digits (int's own limit)
        raise RequestError(HTTPStatus.BAD_REQUEST, f"body is not JSON this server reads ({err})") from None
    except RecursionError:
        raise RequestError(HTTPStatus.BAD_REQUEST, "body is not JSON this server reads (nested too deep)") from None
    if not isinstance(body, dict):
        raise RequestError(HTTPStatus.BAD_REQUEST, "body must be a JSON object")
    return body


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _no_repeated_fields(pairs: list[tuple[str, object]]) -> dict:
    repeated = [k for k, n in Counter(k for k, _ in pairs).items() if n > 1]
    if repeated:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"field {repeated[0]!r} is given twice; give each field once")
    return dict(pairs)


def without_head(bank: AdapterBank) -> list[str]:
    """The adapters of `bank` that carry no task head of their own."""
    heads = [m for m in bank.model.modules() if isinstance(m, HeadBank)]
    return [n for i, n in enumerate(bank.names, start=1) if all(h.slot_of[i] == 0 for h in heads)]


def find_adapters(folder: Path) -> dict[str, Path]:
    """``NAME.safetensors`` files and ``NAME/`` adapter folders directly inside `folder`."""
    if not folder.is_dir():
        raise LoRAError(f"no adapter folder {folder}; give a folder of NAME.safetensors files or NAME/ folders")
    found, skipped = {}, []
    for entry in sorted(folder.iterdir()):
        name = entry.stem if entry.suffix == ".safetensors" and entry.is_file() else entry.name
        is_adapter = (entry.is_file() and entry.suffix == ".safetensors") or (
            entry.is_dir() and any((entry / f).is_file() for f in ("adapter.safetensors", "adapter_config.json"))
        )
        if not is_adapter:
            continue
        if not NAME.fullmatch(name) or ".." in name:
            skipped.append(entry.name)
            continue
        found[name] = entry
    if skipped:
        log.warning("skipped adapters whose names are not plain (letters, digits, _.-): %s", ", ".join(skipped))
    if not found:
        raise LoRAError(f"{folder} holds no adapters (NAME.safetensors files or NAME/ folders with one)")
    return found


def load_base(path: str, task: str, num_labels: int, base_head: bool = False) -> tuple[nn.Module, object]:
    """The base model and tokenizer of a transformers folder or hub id, with the head `task` needs;
    `base_head` (classify) requires the folder to hold that head, trained, rather than a new random one."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    try:
        if task == "classify":
            model, info = AutoModelForSequenceClassification.from_pretrained(
                path, num_labels=num_labels, output_loading_info=True
            )
            if base_head and info["missing_keys"]:
                raise LoRAError(
                    f"--base-head: {path} holds no classifier of its own ({sorted(info['missing_keys'])[0]} is "
                    "new and random); leave --base-head out and serve adapters saved with their head"
                )
        else:
            model = AutoModelForCausalLM.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as err:
        raise LoRAError(f"cannot load the base model {path} ({str(err).splitlines()[0]})") from None
    return model, tokenizer


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        """One line (argparse's own adds the usage): what is wrong and where to look."""
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _number(kind: type, low: float, high: float):
    """An argparse type for a number of `kind` in [low, high]: a port of 70000 or -1, a batch of 0, a
    timeout of nan are refused before anything loads."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {_KIND[kind]}") from None
        if not low <= value <= high:  # nan too
            raise argparse.ArgumentTypeError(f"{text} is out of range; give {_KIND[kind]} from {low} to {high}")
        return value

    return parse


def parser(prog: str, model_option: tuple[str, str]) -> argparse.ArgumentParser:
    """The server's command line; `model_option` is the (flag, help) that names the base model."""
    p = _Parser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument(model_option[0], required=True, help=model_option[1])
    p.add_argument("--adapters", type=Path, required=True, help="folder of NAME.safetensors files or NAME/ folders")
    p.add_argument("--task", choices=TASKS, default="classify")
    p.add_argument(
        "--num-labels", type=_number(int, 1, 100_000), default=2, help="classes of the classifier heads (classify)"
    )
    p.add_argument(
        "--base-head",
        action="store_true",
        help="the base model's own classifier is trained: serve adapters without a head (and requests without "
        "an adapter) with it; without this flag such adapters are refused",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_number(int, 0, 65535), default=8000, help="0 picks a free port")
    p.add_argument("--max-batch", type=_number(int, *RANGES["max_batch"]), default=Limits.max_batch)
    low, high = RANGES["max_wait_s"]
    p.add_argument("--max-wait-ms", type=_number(float, 1000 * low, 1000 * high), default=1000 * Limits.max_wait_s)
    p.add_argument("--max-new-tokens", type=_number(int, *RANGES["max_new_tokens"]), default=Limits.max_new_tokens)
    p.add_argument(
        "--request-timeout",
        type=_number(float, *RANGES["request_timeout_s"]),
        default=Limits.request_timeout_s,
        help="seconds for a whole request (line, headers, body) to arrive; slower clients are closed",
    )
    p.add_argument("--max-connections", type=_number(int, *RANGES["max_connections"]), default=Limits.max_connections)
    return p


def serve(args: argparse.Namespace, load_model, user_errors: tuple[type[Exception], ...] = ()) -> int:
    """Load the adapters of `args.adapters` over `load_model()`'s (model, tokenizer) and serve them until
    SIGTERM or Ctrl-C, then drain (`Server.stop`) and return 0; a bad folder or model is one line on
    stderr and exit status 2."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    limits = Limits(
        max_new_tokens=args.max_new_tokens,
        max_batch=args.max_batch,
        max_wait_s=args.max_wait_ms / 1000,
        request_timeout_s=args.request_timeout,
        max_connections=args.max_connections,
    )
    try:
        adapters = find_adapters(args.adapters)
        model, tokenizer = load_model()
        bank = load(model, adapters)
        engine = BatchRunner(model, tokenizer, bank, args.task, limits, base_head=args.base_head)
    except (LoRAError, ValueError, *user_errors) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        server = Server(engine, args.host, args.port)
    except OSError as err:
        print(
            f"error: cannot listen on {args.host}:{args.port} ({err.strerror}); choose another --port", file=sys.stderr
        )
        return 2
    stop = threading.Event()
    with _signals_set(stop):
        server.start()
        print(f"serving {len(bank.names)} adapters ({', '.join(bank.names)}) on {server.url}", flush=True)
        while not stop.wait(1.0):  # a timeout, so the signal handler runs promptly on every platform
            pass
        log.info("draining: %d requests in flight; a second signal ends the server at once", engine.stats.in_flight)
        server.stop()
    log.info("drained; every request begun was answered")
    return 0


@contextlib.contextmanager
def _signals_set(stop: threading.Event):
    """SIGTERM and SIGINT set `stop` (the server then drains) and restore the default action, so that a second
    one ends the process at once. Only the main thread may set handlers; elsewhere the caller stops the server."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = (signal.SIGTERM, signal.SIGINT)

    def on_signal(signum, frame):
        for s in signals:
            signal.signal(s, signal.SIG_DFL)
        stop.set()

    before = {s: signal.signal(s, on_signal) for s in signals}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def main(argv=None) -> int:
    args = parser("python -m lora.serve", ("--base", "a transformers model folder or hub id")).parse_args(argv)
    return serve(args, lambda: load_base(args.base, args.task, args.num_labels, args.base_head))


if __name__ == "__main__":
    sys.exit(main())
