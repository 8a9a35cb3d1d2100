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
    return Server(BatchRunner(model, CharTokenizer(128), bank, task, Limits(**limits)), port=0)


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
    ("/classify", {"text": "x" * 600}, 413, "at most 512"),
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
