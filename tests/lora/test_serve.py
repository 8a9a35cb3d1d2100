"""lora.serve: a load test of mixed-adapter requests, each answer checked against its adapter alone."""

import json
import random
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from conftest import tiny
from test_multi import save_adapters

import experiments.serve
import lora
import lora.serve
from experiments.models import CharTokenizer
from lora.serve import BatchRunner, Limits, Server

TEXTS = ["a gripping film", "dull", "name[Aromi], eatType[coffee shop]", "xyz " * 5, "the end", "q"]


def post(url: str, payload, raw: bytes | None = None) -> tuple[int, dict]:
    data = raw if raw is not None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def serve(family: str, task: str, files: dict, **limits) -> Server:
    model = tiny(family)
    bank = lora.multi.load(model, files)
    # base_head: the tiny model's classifier is seeded, the same one `reference` uses for no adapter
    return Server(BatchRunner(model, CharTokenizer(128), bank, task, Limits(**limits), base_head=True), port=0)


_MODELS = {}


def reference(family, files, name, ids, max_new_tokens=None):
    key = (family, None if name is None else str(files[name]))
    if key not in _MODELS:
        _MODELS[key] = tiny(family) if name is None else lora.load(tiny(family), files[name])
    model = _MODELS[key]
    with torch.no_grad():
        if max_new_tokens is None:
            return model(input_ids=ids[None]).logits[0]
        out = model.generate(
            ids[None],
            attention_mask=torch.ones_like(ids[None]),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=0,
        )
    tokens = out[0, len(ids) :].tolist()
    return tokens[: tokens.index(2)] if 2 in tokens else tokens  # CharTokenizer's eos is 2


def load_test(server, requests):
    with ThreadPoolExecutor(12) as pool:
        return list(pool.map(lambda r: post(server.url + r[0], r[1]), requests))


@pytest.mark.parametrize(("family", "task"), [("bert", "classify"), ("llama", "generate")])
def test_mixed_requests_answer_as_each_adapter_alone(tmp_path, family, task):
    files = save_adapters(family, tmp_path)
    rng = random.Random(0)
    names = [None, *files]
    requests = []
    for i in range(48):
        body = {"adapter": names[i % len(names)], ("text" if task == "classify" else "prompt"): rng.choice(TEXTS)}
        if task == "generate":
            body["max_new_tokens"] = rng.choice([1, 4, 9])
        requests.append((f"/{task}", body))
    with serve(family, task, files, max_batch=16, max_wait_s=0.05) as server:
        answers = load_test(server, requests)
        stats = get(server.url + "/stats")[1]
    tok = CharTokenizer(128)
    for (_, body), (status, answer) in zip(requests, answers, strict=True):
        assert status == 200, answer
        if task == "classify":
            ids = tok(body["text"])["input_ids"][0]
            expected = reference(family, files, body["adapter"], ids)
            torch.testing.assert_close(torch.tensor(answer["logits"]), expected, atol=1e-5, rtol=1e-5)
            assert answer["label"] == int(expected.argmax())
        else:
            ids = tok(body["prompt"])["input_ids"][0]
            assert answer["tokens"] == reference(family, files, body["adapter"], ids, body["max_new_tokens"])
    assert stats["rows"] == 48
    assert stats["batches"] < 48 and stats["most_adapters_in_a_batch"] > 1  # batched, across adapters


BAD_REQUESTS = [  # (path, body or raw bytes, status, part of the one-line error)
    ("/classify", b"{not json", 400, "not JSON"),
    ("/classify", b"\xff\xfe", 400, "not JSON"),
    ("/classify", [1, 2], 400, "JSON object"),
    ("/classify", {"adapter": "a"}, 400, '"text" must be a non-empty string'),
    ("/classify", {"text": 3, "adapter": "a"}, 400, '"text" must be a non-empty string'),
    ("/classify", {"text": "hi", "adapter": "zz"}, 404, "unknown adapter 'zz'"),
    ("/classify", {"text": "hi", "adapter": "../a"}, 404, "unknown adapter '../a'"),
    ("/classify", {"text": "hi", "adapter": ["a"]}, 404, "unknown adapter"),
    ("/classify", {"text": "x" * 600}, 413, "602 tokens; at most 64"),  # the model's positions, not a fixed 512
    ("/classify", {"text": "x" * 63}, 413, "65 tokens; at most 64"),  # before: accepted, and failed its whole batch
    ("/classify", b"[" * 60000, 400, "nested too deep"),  # before: a 500
    ("/classify", {"text": "x" * 70_000}, 413, "at most 65536"),
    ("/generate", {"prompt": "hi"}, 404, "this server answers POST /classify"),
]


def test_bad_requests_get_a_4xx_and_one_line(tmp_path):
    files = save_adapters("bert", tmp_path)
    with serve("bert", "classify", files) as server:
        for path, body, status, message in BAD_REQUESTS:
            raw = body if isinstance(body, bytes) else None
            code, answer = post(server.url + path, body, raw)
            assert (code, message in answer["error"]) == (status, True), (body, answer)
            assert "\n" not in answer["error"]
        assert get(server.url + "/nowhere")[0] == 404
        assert get(server.url + "/adapters")[1] == {"adapters": ["a", "b", "c"], "task": "classify"}
        assert post(server.url + "/classify", {"text": "still fine", "adapter": "b"})[0] == 200


def test_generate_limits(tmp_path):
    files = save_adapters("llama", tmp_path)
    with serve("llama", "generate", files, max_new_tokens=8) as server:
        assert post(server.url + "/generate", {"prompt": "hi", "max_new_tokens": 9})[0] == 413
        assert post(server.url + "/generate", {"prompt": "hi", "max_new_tokens": 0})[0] == 400
        assert post(server.url + "/generate", {"prompt": "hi", "max_new_tokens": True})[0] == 400


def test_command_line_serves_a_folder_of_adapters(tmp_path):
    files = save_adapters("llama", tmp_path / "runs")
    folder = tmp_path / "adapters"
    folder.mkdir()
    for name, file in files.items():
        (folder / f"{name}.safetensors").write_bytes(file.read_bytes())
    (folder / "not an adapter.txt").write_text("ignored")
    cmd = [
        sys.executable,
        "-m",
        "experiments.serve",
        "--model",
        "tiny_llama",
        "--task",
        "generate",
        "--adapters",
        str(folder),
        "--port",
        "0",
    ]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            line = proc.stdout.readline()
            assert line.startswith("serving 3 adapters (a, b, c) on http://127.0.0.1:"), line + proc.stderr.read()
            url = line.split(" on ")[1].strip()
            status, answer = post(url + "/generate", {"prompt": "name[Aromi]", "adapter": "c", "max_new_tokens": 5})
            assert status == 200
            ids = CharTokenizer(128)("name[Aromi]")["input_ids"][0]
            assert answer["tokens"] == reference("llama", files, "c", ids, 5)
        finally:
            proc.terminate()


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: d / "missing", "no adapter folder"),
        (lambda d: d, "holds no adapters"),
        (lambda d: [(d / "x.safetensors").write_bytes(b"junk"), d][1], "not a readable safetensors file"),
    ],
)
def test_command_line_bad_adapter_folders_are_one_line(tmp_path, capsys, setup, message):
    folder = setup(tmp_path)
    argv = ["--model", "tiny_llama", "--task", "generate", "--adapters", str(folder), "--port", "0"]
    assert experiments.serve.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


# --- isolation and load (issue 17) --------------------------------------------------------------------------


def _rss_mb() -> float:
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_64_clients_2000_mixed_requests_one_in_ten_bad(tmp_path):
    """Every well-formed request answered as its adapter alone answers, every bad one a 4xx, no connection
    reset (the listen backlog was 5: 10-13% resets at 64 clients), and the server's memory flat."""
    files = save_adapters("bert", tmp_path)
    rng = random.Random(1)
    pool = ["".join(rng.choice("abcdefgh ") for _ in range(rng.randint(1, 50))) for _ in range(40)]
    names = [None, *files]
    requests = []
    for i in range(2000):
        if i % 10 == 9:  # one in ten: malformed, too long for the model, or an unknown adapter
            requests.append([(b"{oops", 400), ({"text": "y" * 80}, 413), ({"text": "hi", "adapter": "zz"}, 404)][i % 3])
        else:
            requests.append(({"text": rng.choice(pool), "adapter": names[i % 4]}, 200))

    def send(request):
        body, _ = request
        try:
            return post(server.url + "/classify", body, body if isinstance(body, bytes) else None)
        except Exception as err:  # a reset or refused connection: what this test is about
            return -1, {"error": repr(err)}

    with serve("bert", "classify", files, max_batch=32, max_wait_s=0.005) as server:
        with ThreadPoolExecutor(64) as threads:
            first = list(threads.map(send, requests[:400]))
            before = _rss_mb()
            rest = list(threads.map(send, requests[400:]))
        after = _rss_mb()
        stats = get(server.url + "/stats")[1]
    tok = CharTokenizer(128)
    for (body, status), (code, answer) in zip(requests, first + rest, strict=True):
        assert code == status, (body, code, answer)
        if status == 200:
            expected = reference("bert", files, body["adapter"], tok(body["text"])["input_ids"][0])
            torch.testing.assert_close(torch.tensor(answer["logits"]), expected, atol=1e-5, rtol=1e-5)
    assert stats["rows"] == 1800 and stats["most_adapters_in_a_batch"] > 1
    assert after - before < 50, f"resident memory grew by {after - before:.0f} MB over 1,600 requests"


def test_a_request_that_fails_alone_does_not_fail_its_batch(tmp_path):
    files = save_adapters("bert", tmp_path)
    tok = CharTokenizer(128)
    poison = tok("poison")["input_ids"][0].tolist()
    with serve("bert", "classify", files, max_batch=16, max_wait_s=0.2) as server:
        run = server.engine.run

        def fragile(requests):  # a fault only one request triggers (say, an input that breaks a kernel)
            if any(r["ids"].tolist() == poison for r in requests):
                raise RuntimeError("this input breaks the model")
            return run(requests)

        server.engine.run = fragile
        texts = ["poison" if i == 5 else f"text {i}" for i in range(12)]
        with ThreadPoolExecutor(12) as threads:
            answers = list(threads.map(lambda t: post(server.url + "/classify", {"text": t, "adapter": "a"}), texts))
    for text, (code, answer) in zip(texts, answers, strict=True):
        if text == "poison":
            assert code == 500 and "breaks the model" in answer["error"]
        else:
            assert code == 200, answer
            expected = reference("bert", files, "a", tok(text)["input_ids"][0])
            torch.testing.assert_close(torch.tensor(answer["logits"]), expected, atol=1e-5, rtol=1e-5)


def test_a_half_sent_request_times_out_and_frees_its_thread(tmp_path):
    import socket
    import time

    files = save_adapters("bert", tmp_path)
    with serve("bert", "classify", files, request_timeout_s=0.5) as server:
        host, port = server.httpd.server_address[:2]
        with socket.create_connection((host, port)) as slow:
            slow.sendall(b'POST /classify HTTP/1.1\r\nContent-Length: 100\r\n\r\n{"text": ')
            time.sleep(1.5)
            reply = slow.recv(4096).decode()
        assert reply.startswith("HTTP/1.1 408") and "did not arrive in time" in reply
        with socket.create_connection((host, port)) as idle:
            time.sleep(1.5)
            assert idle.recv(4096) == b""  # closed by the server, not held forever
        assert post(server.url + "/classify", {"text": "still fine", "adapter": "b"})[0] == 200


def test_a_port_in_use_is_one_line(tmp_path, capsys):
    files = save_adapters("llama", tmp_path / "runs")
    folder = tmp_path / "adapters"
    folder.mkdir()
    for name, file in files.items():
        (folder / f"{name}.safetensors").write_bytes(file.read_bytes())
    with serve("llama", "generate", files) as server:
        port = server.httpd.server_address[1]
        argv = ["--model", "tiny_llama", "--task", "generate", "--adapters", str(folder), "--port", str(port)]
        assert experiments.serve.main(argv) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port} (Address already in use)" in err and len(err.strip().splitlines()) == 1
