"""The NLG metric suite against the official E2E script's numbers, closed-form cases, readers and the CLI.

Expected E2E values: shared/data/e2e-metrics-examples/expected-scores.json (tuetschek/e2e-metrics @ 1b9c4d8).
JVM start-up dominates (METEOR loads its paraphrase table, ~10 s), so the default run starts METEOR once (the E2E
example through the CLI); everything else avoids METEOR or is marked slow.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sacrebleu

from experiments import paths
from experiments.metrics import E2E_METRICS, JavaMissing, ScoreInputError, e2e_scores, mteval, read_predictions
from experiments.metrics import read_references as read_refs
from experiments.metrics.coco import coco_scores
from experiments.metrics.files import check_counts
from experiments.metrics.ter import lora_ter, pyter_ter
from experiments.metrics.webnlg import bleu as webnlg_bleu
from experiments.metrics.webnlg import lora_preprocess

HAS_JAVA = shutil.which("java") is not None
needs_java = pytest.mark.skipif(not HAS_JAVA, reason="java not on PATH: METEOR and the PTB tokenizer need a JRE")
FULL_TOL = 1e-9


@pytest.fixture(scope="module")
def examples():
    folder = paths.data_dir() / "e2e-metrics-examples"
    if not (folder / "expected-scores.json").is_file():
        pytest.skip(f"E2E metric fixtures not found in {folder} (set LORA_DATA_DIR to the shared data folder)")
    return folder


@pytest.fixture(scope="module")
def expected(examples):
    return json.loads((examples / "expected-scores.json").read_text())


def cli(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "experiments.score", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=paths.ROOT,
        **kwargs,
    )


def run_json(*args: str) -> dict:
    if not HAS_JAVA:
        pytest.skip("java not on PATH: METEOR and the PTB tokenizer need a JRE")
    stdout, stderr = cli(*args, "--json").communicate(timeout=300)
    assert stderr == "", stderr
    return json.loads(stdout)


@pytest.fixture(scope="module")
def e2e_example_cli(examples):
    """The official example through the CLI: the one METEOR load (~10 s) of the default run."""
    return run_json("e2e", str(examples / "devel-conc.txt"), str(examples / "baseline-output.txt"))


# --- E2E: the official numbers ------------------------------------------------------------------------------------


def test_e2e_example_matches_official(e2e_example_cli, expected):
    got = e2e_example_cli
    assert list(got) == list(E2E_METRICS)
    printed, full = expected["example"]["printed"]["python"], expected["example"]["full"]["python"]
    for name in E2E_METRICS:
        assert f"{got[name]:.4f}" == f"{printed[name]:.4f}", name
        assert got[name] == pytest.approx(full[name], abs=FULL_TOL), name


def load_example(examples):
    return read_refs(examples / "devel-conc.txt"), read_predictions(examples / "baseline-output.txt")


def load_shifted(examples):
    return read_refs(examples / "testset_w_refs.csv"), read_predictions(examples / "testset-shifted-ref-output.txt")


@pytest.mark.parametrize("case", ["example", "testset_shifted_ref"])
@pytest.mark.parametrize("variant", ["python", "perl"])
def test_bleu_nist_match_official(examples, expected, case, variant):
    refs, hyps = load_example(examples) if case == "example" else load_shifted(examples)
    bleu, nist = mteval.bleu_nist(hyps, refs, variant)
    full = expected[case]["full"][variant]
    assert bleu == pytest.approx(full["BLEU"], abs=1e-12)
    assert nist == pytest.approx(full["NIST"], abs=1e-12 if variant == "python" else FULL_TOL)
    assert f"{nist:.4f}" == f"{expected[case]['printed'][variant]['NIST']:.4f}"


@needs_java
def test_shifted_rouge_cider_match_official(examples, expected):
    refs, hyps = load_shifted(examples)
    got = coco_scores(refs, hyps, meteor=False)
    full = expected["testset_shifted_ref"]["full"]["python"]
    for name in ("ROUGE_L", "CIDEr"):
        assert got[name] == pytest.approx(full[name], abs=FULL_TOL), name


@pytest.mark.slow
@needs_java
def test_shifted_all_five_match_official(examples, expected):
    refs, hyps = load_shifted(examples)
    got = e2e_scores(refs, hyps)
    for name in E2E_METRICS:
        assert got[name] == pytest.approx(expected["testset_shifted_ref"]["full"]["python"][name], abs=FULL_TOL)


def test_csv_and_grouped_plain_text_give_the_same_groups(examples):
    from_csv = read_refs(examples / "testset_w_refs.csv")
    assert from_csv == read_refs(examples / "testset-refs-grouped.txt")
    assert len(from_csv) == 630 and sum(map(len, from_csv)) == 4693


# --- closed-form cases --------------------------------------------------------------------------------------------


def test_identical_hypothesis_has_bleu_one():
    refs = [["The Eagle is a coffee shop near Burger King.", "x"], ["It is cheap, and rated 5 out of 5."]]
    hyps = [rs[0] for rs in refs]
    assert mteval.bleu(hyps, refs) == 1.0
    assert webnlg_bleu(refs, hyps) == pytest.approx(100.0)


def test_bleu_equals_sacrebleu_lowercased():
    refs = [["The cat is on the mat.", "There is a cat on the mat."], ["A dog barks loudly at night."]]
    hyps = ["the cat sat on the mat .", "The dog barks at night!"]
    streams = [[rs[k] if k < len(rs) else None for rs in refs] for k in range(2)]
    expected = sacrebleu.corpus_bleu(hyps, streams, tokenize="13a", lowercase=True).score / 100
    assert mteval.bleu(hyps, refs) == pytest.approx(expected, abs=1e-12)


def test_nist_variants_agree_with_constant_reference_counts():
    refs = [["a b c d e f g", "a b c e e f"], ["x y z w v u", "x y"]]
    hyps = ["a b c d e", "x y z w v u"]
    assert mteval.nist(hyps, refs, "python") == pytest.approx(mteval.nist(hyps, refs, "perl"), abs=1e-12)
    assert mteval.nist(["a b"], [["a b c"]]) > 0  # no 3- to 5-grams in the output: official code divides by zero


def test_ter_known_edits():
    assert pyter_ter(["a", "b", "d"], ["a", "b", "c", "d"]) == pytest.approx(1 / 4)  # one insertion
    assert pyter_ter(["c", "d", "a", "b"], ["a", "b", "c", "d"]) == pytest.approx(1 / 4)  # one block shift
    assert pyter_ter([], ["a", "b"]) == 1.0
    assert lora_ter([["a b c d", "c d a b"], [""]], ["c d a b", "x"]) == pytest.approx((0 + 1) / 2)


def test_lora_preprocess_is_idempotent():
    text = 'Alan Bean (born on March 15th, 1932) was a "crew member".'
    once = lora_preprocess(text)
    assert once == lora_preprocess(once) and once == once.lower()


# --- readers ------------------------------------------------------------------------------------------------------


def test_reader_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"caf\xe9\n")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    for path, words in [(tmp_path / "missing.txt", "no such file"), (bad, "UTF-8"), (empty, "empty")]:
        with pytest.raises(ScoreInputError, match=words) as err:
            read_predictions(path)
        assert "\n" not in str(err.value)
    with pytest.raises(ScoreInputError, match="REFS r has 2 inputs but PREDS p has 1 lines"):
        check_counts([["a"], ["b"]], ["a"], "r", "p")


def test_csv_reader_fixes_mojibake_and_groups_consecutive_mrs(tmp_path):
    path = tmp_path / "refs.csv"
    path.write_text('\ufeff"mr","ref"\n"m1","Costs Â£20"\n"m1","CafÃ© b"\n"m2","c"\n"m1","d"\n', encoding="utf-8")
    assert read_refs(path) == [["Costs £20", "Café b"], ["c"], ["d"]]
    (tmp_path / "odd.csv").write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ScoreInputError, match="columns"):
        read_refs(tmp_path / "odd.csv")


def test_plain_reader_single_and_multi_reference(tmp_path):
    (tmp_path / "multi.txt").write_text("a\nb\n\nc\n")
    (tmp_path / "single.txt").write_text("a\nb\n")
    assert read_refs(tmp_path / "multi.txt") == [["a", "b"], ["c"]]
    assert read_refs(tmp_path / "single.txt") == [["a"], ["b"]]


def test_lora_reference_folder(tmp_path):
    (tmp_path / "reference0").write_text("a\nb\n")
    (tmp_path / "reference1").write_text("a2\nb\n")
    assert read_refs(tmp_path) == [["a", "a2"], ["b", "b"]]


# --- CLI and Java -------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_webnlg_json(tmp_path):
    refs = [["The Eagle is a pub.", "Eagle is a pub"], ["Aarhus Airport serves Aarhus, Denmark."]]
    (tmp_path / "refs.txt").write_text("\n\n".join("\n".join(rs) for rs in refs) + "\n")
    (tmp_path / "preds.txt").write_text("".join(rs[0] + "\n" for rs in refs))
    got = run_json("webnlg", str(tmp_path / "refs.txt"), str(tmp_path / "preds.txt"))
    assert list(got) == ["BLEU", "METEOR", "TER"]
    assert got["BLEU"] == pytest.approx(100.0) and got["TER"] == 0.0 and 0.9 < got["METEOR"] <= 1.0


def test_cli_bad_input_exits_2_with_one_line(tmp_path):
    (tmp_path / "refs.txt").write_text("a\nb\n\nc\n")
    (tmp_path / "preds.txt").write_text("a\n")
    proc = cli("e2e", str(tmp_path / "refs.txt"), str(tmp_path / "preds.txt"))
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2 and stdout == ""
    assert stderr.count("\n") == 1 and stderr.startswith("error: ") and "has 2 inputs but PREDS" in stderr


def test_missing_java_is_one_clear_error(tmp_path, monkeypatch):
    (tmp_path / "refs.txt").write_text("a b\n")
    (tmp_path / "preds.txt").write_text("a b\n")
    proc = cli("e2e", str(tmp_path / "refs.txt"), str(tmp_path / "preds.txt"), env={**os.environ, "PATH": ""})
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2 and stderr.count("\n") == 1 and "need Java" in stderr
    monkeypatch.setattr(shutil, "which", lambda _: None)
    with pytest.raises(JavaMissing, match="apt install default-jre-headless"):
        e2e_scores([["a"]], ["a"])
    assert issubclass(JavaMissing, RuntimeError)


# --- edge cases against the official script ----------------------------------------------------------------------
# Golden values printed by tuetschek/e2e-metrics @ 1b9c4d8 (what microsoft/LoRA clones), Python 3.11, Java 17:
#   (cd e2e-metrics && python measure_scores.py -p REF PRED), full precision from its own functions;
# REF: the first 5 inputs of example-inputs/devel-conc.txt, PRED built from example-inputs/baseline-output.txt.
OFFICIAL_EDGES = {
    "bom": (0.6296641617767428, 5.344026867131259, 0.46322731382056376, 0.7633586735838536, 1.6469782490305076),
    "last_empty": (0.6356751777116049, 4.673646049278661, 0.3960028203948872, 0.670759053090495, 1.6105579557023653),
    "all_empty_but_one": (16.459565444281864, 0.00010721967815705452, 0.07730904843155342, 0.19025341130604287,
                          0.2502049431783071),
    "short": (2.668843145283325e-06, 3.85943880832764e-09, 0.09664580252127125, 0.22537899169053413,
              0.03254431204019476),
    "short_plus_exact_ref": (27.865778453304138, 0.0001803566704374187, 0.17166172942383792, 0.35191475813000056,
                             0.42166058474206836),
}  # fmt: skip


def edge_case(examples, tmp_path, name) -> tuple[Path, Path]:
    groups = [g.split("\n") for g in (examples / "devel-conc.txt").read_text().strip().split("\n\n")][:5]
    preds = (examples / "baseline-output.txt").read_text().split("\n")[:5]
    lines = {
        "bom": preds,
        "last_empty": [*preds[:4], ""],
        "all_empty_but_one": ["", "", preds[2], "", ""],
        "short": ["Alimentum", "Alimentum restaurant", "family-friendly", "city centre", "Alimentum"],
        "short_plus_exact_ref": [groups[2][0], *["Alimentum"] * 4],
    }[name]
    refs, hyps = tmp_path / "refs.txt", tmp_path / "preds.txt"
    refs.write_text("\n\n".join("\n".join(g) for g in groups) + "\n")
    hyps.write_bytes((b"\xef\xbb\xbf" if name == "bom" else b"") + ("\n".join(lines) + "\n").encode())
    return refs, hyps


@needs_java
@pytest.mark.parametrize("name", OFFICIAL_EDGES)
def test_empty_short_and_bom_outputs_score_as_the_official_script(examples, tmp_path, caplog, name):
    """A BOM stays part of the first prediction, as the official reader decodes it (before, ours dropped it);
    outputs too short for 4-grams give the official BLEU above 1, and a warning says why."""
    refs, hyps = edge_case(examples, tmp_path, name)
    got = e2e_scores(read_refs(refs), read_predictions(hyps))
    assert tuple(got[m] for m in E2E_METRICS) == pytest.approx(OFFICIAL_EDGES[name], rel=FULL_TOL, abs=1e-12)
    if name == "bom":
        assert "starts with a byte-order mark" in caplog.text
    if got["BLEU"] > 1:
        assert "BLEU is not a precision here" in caplog.text


@needs_java
def test_an_empty_last_webnlg_output_still_gets_all_three_scores():
    """Before, METEOR read one line fewer than there were outputs and the whole scoring raised (the official
    eval.py then reports BLEU and TER only). Lines now end with a newline, so an empty last output counts."""
    from experiments.metrics import webnlg_scores

    refs = [["the cat sat on the mat"], ["a dog barks loudly"], ["birds fly south"]]
    empty = webnlg_scores(refs, ["the cat sat on a mat", "a dog barks", ""])
    full = webnlg_scores(refs, ["the cat sat on a mat", "a dog barks", "birds fly south"])
    assert set(empty) == {"BLEU", "METEOR", "TER"} and 0 < empty["METEOR"] < full["METEOR"]
    assert empty["BLEU"] < full["BLEU"] and empty["TER"] > full["TER"]


def test_one_meteor_jvm_per_process_replaced_when_it_stopped_or_forked(monkeypatch):
    """coco_scores reuses its process's METEOR JVM (each start loads the paraphrase table, ~10 s of CPU); the edge
    cases above check the reused JVM's scores against the official script. A stopped JVM, or one that belongs to
    the parent of a forked process, is never written to: a new one is started."""
    from experiments.metrics import coco

    class FakeMeteor:
        started: list = []

        def __init__(self):
            self.running = True
            FakeMeteor.started.append(self)

        def alive(self):
            return self.running

        def close(self):
            self.running = False

    monkeypatch.setattr(coco, "Meteor", FakeMeteor)
    monkeypatch.setattr(coco, "_SHARED", {})
    monkeypatch.setattr(coco.atexit, "register", lambda close: None)
    first = coco.shared_meteor()
    assert coco.shared_meteor() is first and len(FakeMeteor.started) == 1
    first.close()  # the JVM stopped (or was killed)
    second = coco.shared_meteor()
    assert second is not first and second.alive()
    monkeypatch.setattr(coco.os, "getpid", lambda: -1)  # as in a forked child
    assert coco.shared_meteor() not in (first, second) and len(FakeMeteor.started) == 3
