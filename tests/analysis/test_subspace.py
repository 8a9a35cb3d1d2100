"""Section 7's measures against closed forms."""

import numpy as np
import pytest

from analysis.amplification import projection_norm, table7
from analysis.subspace import phi, phi_grid

rng = np.random.default_rng(0)


def test_a_subspace_with_itself_is_one_on_the_diagonal_and_rotations_do_not_matter():
    a = rng.normal(size=(8, 64))
    rotation, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    grid = phi_grid(a, rotation @ a)  # the same row space, other basis
    assert grid[-1, -1] == pytest.approx(1.0)
    assert phi(a, a, 5, 5) == pytest.approx(1.0) and phi(a, a, 3, 7) == pytest.approx(1.0)


def test_independent_random_subspaces_average_max_i_j_over_d():
    d, i, j = 64, 4, 8
    values = [phi(rng.normal(size=(i, d)), rng.normal(size=(j, d)), i, j) for _ in range(400)]
    assert np.mean(values) == pytest.approx(max(i, j) / d, rel=0.08)


def test_a_planted_shared_top_direction_gives_phi_1_1_near_one():
    d = 256
    shared = rng.normal(size=d)
    a1 = np.vstack([10 * shared, rng.normal(size=(7, d))])
    a2 = np.vstack([10 * shared, rng.normal(size=(63, d))])
    assert phi(a1, a2, 1, 1) > 0.95
    assert phi(rng.normal(size=(8, d)), rng.normal(size=(64, d)), 1, 1) < 0.1


def test_left_side_for_b_matrices():
    b = rng.normal(size=(64, 8))
    assert phi(b, 2 * b, 8, 8, side="left") == pytest.approx(1.0)


def test_table7_on_known_singular_structure():
    u, _ = np.linalg.qr(rng.normal(size=(32, 32)))
    v, _ = np.linalg.qr(rng.normal(size=(32, 32)))
    s = np.linspace(10, 1, 32)
    w = u @ np.diag(s) @ v.T
    delta = 3.0 * np.outer(u[:, 20], v[:, 20])  # along W's 21st direction
    t = table7(w, delta, r=1)
    assert t["w_on_delta"] == pytest.approx(s[20]) and t["w_on_w"] == pytest.approx(s[0])
    assert t["delta_norm"] == pytest.approx(3.0) and t["amplification"] == pytest.approx(3.0 / s[20])
    assert projection_norm(w, w, 32) == pytest.approx(np.linalg.norm(w))


def test_cli_compares_two_adapters_and_never_overwrites(tmp_path, capsys):
    import json

    import lora
    from analysis import subspace
    from experiments.models import build

    for name, r, seed in (("r8", 8, 0), ("r4", 4, 1)):
        model = lora.apply(build("tiny_bert", seed=seed), lora.LoRAConfig(r=r, targets=("q",)))
        lora.save(model, tmp_path / name)
    subspace.main([str(tmp_path / "r8"), str(tmp_path / "r4")])
    saved = json.loads((tmp_path / "r8" / "subspace-r4.json").read_text())
    key = "encoder.layer.0.attention.self.query.lora_A.q"
    assert np.array(saved[key]["grid"]).shape == (8, 4) and "phi(1,1)" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="exists"):
        subspace.main([str(tmp_path / "r8"), str(tmp_path / "r4")])
