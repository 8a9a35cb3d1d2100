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
Bad requests get a 4xx answer with {"error": one line}: 400 malformed, 404 unknown adapter or
path, 413 too large.

The HTTP layer is the standard library's ThreadingHTTPServer: a localhost research server needs
JSON over POST and nothing a web framework would add, and it keeps the install as it is.
"""

from __future__ import annotations

import argparse
import json
import logging
import queue
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch
from torch import nn

from .config import LoRAError
from .model import max_positions
from .multi import NAME, AdapterBank, load
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
    socket_timeout_s: float = 30.0  # an idle or slow connection is closed after this long


@dataclass
class Stats:
    batches: int = 0
    rows: int = 0
    largest_batch: int = 0
    most_adapters_in_a_batch: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, names: list[str | None]):
        with self.lock:
            self.batches += 1
            self.rows += len(names)
            self.largest_batch = max(self.largest_batch, len(names))
            self.most_adapters_in_a_batch = max(self.most_adapters_in_a_batch, len(set(names)))

    def as_dict(self) -> dict:
        return {k: v for k, v in vars(self).items() if k != "lock"}


class BatchRunner:
    """Runs batches of parsed requests on the model: the part of the server that is not HTTP."""

    def __init__(self, model: nn.Module, tokenizer, bank: AdapterBank, task: str, limits: Limits):
        if task not in TASKS:
            raise LoRAError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
        self.model, self.tokenizer, self.bank, self.task, self.limits = model.eval(), tokenizer, bank, task, limits
        self.stats = Stats()
        self.device = next(model.parameters()).device
        self.positions = max_positions(model.config)  # a longer input would fail its whole batch

    def parse(self, path: str, body: dict) -> dict:
        """Check one request against the task and limits; returns what `run` needs."""
        if path != f"/{self.task}":
            raise RequestError(HTTPStatus.NOT_FOUND, f"no endpoint {path}; this server answers POST /{self.task}")
        key = "text" if self.task == "classify" else "prompt"
        text, adapter = body.get(key), body.get("adapter")
        if not isinstance(text, str) or not text:
            raise RequestError(HTTPStatus.BAD_REQUEST, f'"{key}" must be a non-empty string')
        if adapter is not None and (not isinstance(adapter, str) or adapter not in self.bank.names):
            known = ", ".join(self.bank.names)
            raise RequestError(HTTPStatus.NOT_FOUND, f"unknown adapter {adapter!r}; this server holds {known}")
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


class Batcher:
    """Collects requests from many HTTP threads into batches for one worker thread."""

    def __init__(self, engine: BatchRunner, limits: Limits):
        self.engine, self.limits = engine, limits
        self.queue: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._loop, name="batcher", daemon=True)
        self.thread.start()

    def submit(self, request: dict) -> dict:
        future: Future = Future()
        self.queue.put((request, future))
        return future.result()

    def stop(self):
        self.queue.put(None)
        self.thread.join()

    def _loop(self):
        while (first := self.queue.get()) is not None:
            items = [first]
            deadline = time.monotonic() + self.limits.max_wait_s
            while len(items) < self.limits.max_batch and (wait := deadline - time.monotonic()) > 0:
                try:
                    item = self.queue.get(timeout=wait)
                except queue.Empty:
                    break
                if item is None:
                    self.queue.put(None)  # stop after this batch
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
        self.httpd = _HTTPServer((host, port), _handler(self))
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="http", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Server:
        self.thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.batcher.stop()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class _HTTPServer(ThreadingHTTPServer):
    """A thread per connection (daemon threads: a stuck client never blocks shutdown), and a listen backlog
    for many clients at once (the standard library's 5 reset 10-13% of 64 concurrent connections)."""

    daemon_threads = True
    request_queue_size = 256


def _handler(server: Server) -> type[BaseHTTPRequestHandler]:
    engine, limits = server.engine, server.engine.limits

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = limits.socket_timeout_s  # an idle or half-sent connection gives its thread back

        def do_GET(self):
            if self.path == "/adapters":
                self._send(HTTPStatus.OK, {"adapters": list(engine.bank.names), "task": engine.task})
            elif self.path == "/stats":
                self._send(HTTPStatus.OK, engine.stats.as_dict())
            else:
                self._send(HTTPStatus.NOT_FOUND, {"error": f"no endpoint {self.path}; GET /adapters or /stats"})

        def do_POST(self):
            try:
                request = engine.parse(self.path, self._body())
                self._send(HTTPStatus.OK, server.batcher.submit(request))
            except RequestError as err:
                self._send(err.status, {"error": str(err)})
            except Exception as err:
                self._send(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(err).__name__}: {err}"})

        def _body(self) -> dict:
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                raise RequestError(HTTPStatus.LENGTH_REQUIRED, "send a JSON body with a Content-Length")
            if int(length) > limits.max_body:
                self.close_connection = True  # the unread body must not be taken for the next request
                raise RequestError(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body of {length} bytes; at most {limits.max_body}"
                )
            try:
                raw = self.rfile.read(int(length))
            except TimeoutError:
                self.close_connection = True
                raise RequestError(HTTPStatus.REQUEST_TIMEOUT, "the body did not arrive in time") from None
            try:
                body = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                raise RequestError(HTTPStatus.BAD_REQUEST, f"body is not JSON ({err})") from None
            except RecursionError:
                raise RequestError(
                    HTTPStatus.BAD_REQUEST, "body is not JSON this server reads (nested too deep)"
                ) from None
            if not isinstance(body, dict):
                raise RequestError(HTTPStatus.BAD_REQUEST, "body must be a JSON object")
            return body

        def _send(self, status: HTTPStatus, payload: dict):
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format, *args):
            log.debug("%s " + format, self.address_string(), *args)

    return Handler


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


def load_base(path: str, task: str, num_labels: int) -> tuple[nn.Module, object]:
    """The base model and tokenizer of a transformers folder or hub id, with the head `task` needs."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    try:
        if task == "classify":
            model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels)
        else:
            model = AutoModelForCausalLM.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as err:
        raise LoRAError(f"cannot load the base model {path} ({str(err).splitlines()[0]})") from None
    return model, tokenizer


def parser(prog: str, model_option: tuple[str, str]) -> argparse.ArgumentParser:
    """The server's command line; `model_option` is the (flag, help) that names the base model."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument(model_option[0], required=True, help=model_option[1])
    p.add_argument("--adapters", type=Path, required=True, help="folder of NAME.safetensors files or NAME/ folders")
    p.add_argument("--task", choices=TASKS, default="classify")
    p.add_argument("--num-labels", type=int, default=2, help="classes of the classifier heads (classify)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    p.add_argument("--max-batch", type=int, default=Limits.max_batch)
    p.add_argument("--max-wait-ms", type=float, default=1000 * Limits.max_wait_s)
    p.add_argument("--max-new-tokens", type=int, default=Limits.max_new_tokens)
    return p


def serve(args: argparse.Namespace, load_model, user_errors: tuple[type[Exception], ...] = ()) -> int:
    """Load the adapters of `args.adapters` over `load_model()`'s (model, tokenizer) and serve them until
    interrupted; a bad folder or model is one line on stderr and exit status 2."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        adapters = find_adapters(args.adapters)
        model, tokenizer = load_model()
        bank = load(model, adapters)
    except (LoRAError, ValueError, *user_errors) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    limits = Limits(max_new_tokens=args.max_new_tokens, max_batch=args.max_batch, max_wait_s=args.max_wait_ms / 1000)
    try:
        server = Server(BatchRunner(model, tokenizer, bank, args.task, limits), args.host, args.port)
    except OSError as err:
        print(
            f"error: cannot listen on {args.host}:{args.port} ({err.strerror}); choose another --port", file=sys.stderr
        )
        return 2
    print(f"serving {len(bank.names)} adapters ({', '.join(bank.names)}) on {server.url}", flush=True)
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
    return 0


def main(argv=None) -> int:
    args = parser("python -m lora.serve", ("--base", "a transformers model folder or hub id")).parse_args(argv)
    return serve(args, lambda: load_base(args.base, args.task, args.num_labels))


if __name__ == "__main__":
    sys.exit(main())
