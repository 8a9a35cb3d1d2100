"""H.3 curve against closed forms; the amplification CLI and tables.collect on the tiny-run fixture."""

from __future__ import annotations

import json

import numpy as np
import pytest

from analysis import amplification, tables
from analysis.amplification import h3_curve

rng = np.random.default_rng(0)


def _planted(d=32, s=None):
    """W = U diag(s) V^T with known singular vectors."""
    u, _ = np.linalg.qr(rng.normal(size=(d, d)))
    v, _ = np.linalg.qr(rng.normal(size=(d, d)))
    s = np.linspace(10, 1, d) if s is None else s
    return u, s, v, u @ np.diag(s) @ v.T


def test_h3_curve_is_a_step_at_the_direction_delta_w_lives_in():
    u, s, v, w = _planted()
    m = 5  # Delta W along W's 6th and 7th directions, r = 2
    dw = 2.0 * np.outer(u[:, m], v[:, m]) + 1.0 * np.outer(u[:, m + 1], v[:, m + 1])
    c = h3_curve(w, dw, ks=[1, 5, 6, 7, 32], r=2)
    # phi(W, dW, k, 2) = |top-k of W  ∩  {v_5, v_6}| / min(k, 2)
    assert c["phi"] == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.0], abs=1e-9)
    # U^T W_k V with U, V = dW's directions: only W's components 5 and 6 survive: diag(s5, s6)
    full = np.hypot(s[m], s[m + 1])
    assert c["projection_share"] == pytest.approx([0, 0, s[m] / full, 1, 1], abs=1e-9)


def test_h3_curve_of_w_with_itself_and_the_random_baseline():
    _, _, _, w = _planted(d=64)
    c = h3_curve(w, w, ks=[4, 8, 64], r=4)
    assert c["phi"] == pytest.approx([1.0, 1.0, 1.0]) and c["projection_share"][0] == pytest.approx(1.0)
    # random: E phi(k, r) = max(k, r) / d for independent subspaces; every curve ends at 1 (k = d)
    assert c["phi_random"][0] < 0.4 and c["phi_random"][-1] == pytest.approx(1.0)


def test_collect_reads_every_run_of_the_fixture(tiny_runs):
    rows = tables.collect(tiny_runs)
    by_run = {r["run"]: r for r in rows}
    assert set(by_run) == {"section7/r8-s0", "section7/r64-s0", "section7/r64-s1", "methods/bitfit-s0"}
    r64 = by_run["section7/r64-s1"]
    assert (r64["method"], r64["r"], r64["targets"], r64["seed"], r64["status"]) == ("lora", 64, "q,v", 1, "complete")
    # LoRA on q, v of 2 blocks of width 128 at r=64: 2 x 2 x 2 x 128 x 64 + the head (128 x 2 + 2)
    assert r64["trainable"] == 2 * 2 * 2 * 128 * 64 + 258 and r64["metric"] == "dev/accuracy"
    t6 = tables.table6(rows)
    qv = next(r for r in t6 if r["weight_type"] == "W_q, W_v")
    assert qv["r=64"]["ours"]["n"] == 2 and qv["r=64"]["paper_mnli"] == 91.4


def test_tables_cli_prints_and_saves_and_refuses_an_empty_folder(tiny_runs, tmp_path, capsys):
    tables.main([str(tiny_runs), "--out", str(tmp_path / "t")])
    out = capsys.readouterr().out
    assert "## Table 6" in out and "| section7/r8-s0 |" in out
    assert len(json.loads((tmp_path / "t" / "runs.json").read_text())) == 4
    assert (tmp_path / "t" / "runs.csv").read_text().count("\n") == 5
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_:
        tables.main([str(tmp_path / "empty")])
    assert exit_.value.code == 2 and capsys.readouterr().err.startswith("error: no run under")


def test_amplification_cli_end_to_end_on_a_tiny_run(tiny_runs, tmp_path, capsys):
    out = tmp_path / "amp.json"
    run = str(tiny_runs / "section7" / "r8-s0")
    amplification.main([run, "--base", "tiny_bert", "--layer", "1", "--out", str(out)])
    printed = capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert [(r["layer"], r["type"], r["r"]) for r in saved["rows"]] == [(1, "q", 8), (1, "v", 8)]
    assert "amplif" in printed and "saved" in printed
    # W is the run's W: rebuilt with its seed (0) and width (128), so ||W||_F matches a fresh build
    from experiments.models import build

    fresh = build(model_conf_128(), head="seq_cls", seed=0)
    w = fresh.bert.encoder.layer[1].attention.self.query.weight.detach().double().numpy()
    assert saved["rows"][0]["w_norm"] == pytest.approx(np.linalg.norm(w))
    row = saved["rows"][0]
    assert row["amplification"] == pytest.approx(row["delta_norm"] / row["w_on_delta"])
    assert row["h3"]["ks"][-1] == 128 and row["h3"]["phi"][-1] == pytest.approx(1.0)
    with pytest.raises(SystemExit) as exit_:
        amplification.main([str(tiny_runs / "section7" / "r8-s0"), "--out", str(out)])
    assert exit_.value.code == 2 and "exists" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        amplification.main([str(tiny_runs / "methods" / "bitfit-s0"), "--out", str(tmp_path / "b.json")])
    assert "needs a LoRA adapter" in capsys.readouterr().err


def model_conf_128() -> dict:
    from experiments.models import model_conf

    conf = model_conf("tiny_bert")
    conf["arch"]["hidden_size"] = 128
    return conf
