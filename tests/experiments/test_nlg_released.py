"""The converters of `experiments.tasks.nlg_released` against microsoft/LoRA's released files, byte for byte.

E2E: every line of `valid.txt` / `test.txt` is rebuilt from the official CSV; the measured match (all lines) and
the list of differing lines (none) are pinned, the list being the one in tests/golden/e2e_converter_differences.md.
WebNLG: the three JSON files are rebuilt from the official XML. Needs the shared data bundle (LORA_SHARED_DIR).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest

from experiments.paths import data_dir
from experiments.tasks import nlg_released
from experiments.tasks.base import TaskError
from experiments.tasks.nlg_released import converted_copy, e2e_line, e2e_mr, e2e_reference, e2e_text, webnlg_json

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "e2e_converter_differences.md"
WEBNLG = "webnlg/webnlg_challenge_2017"

# released file -> (official CSV, lines, lines byte-equal as measured)
E2E = {
    "valid.txt": ("devset.csv", 4_672, 4_672),
    "test.txt": ("testset_w_refs.csv", 4_693, 4_693),
}
# released JSON -> its XML sources (a split folder or files in order), per the bundle README's note W
WEBNLG_SOURCES = {
    "dev.json": f"{WEBNLG}/dev",
    "train.json": f"{WEBNLG}/train",
    "test.json": [f"{WEBNLG}/test/testdata_with_lex.xml"],
}


def bundle_file(relative: str) -> Path:
    path = data_dir() / relative
    if not path.exists():
        pytest.skip(f"{path} not found (the shared data bundle is absent; set LORA_SHARED_DIR or LORA_DATA_DIR)")
    return path


@cache
def e2e_pair(released: str) -> tuple[list[str], list[str]]:
    """(ours, released) lines of one E2E file, each line with its newline; computed once per session."""
    csv_name = E2E[released][0]
    ours = e2e_text(bundle_file(f"e2e/{csv_name}"), keep=False)  # converted here, not a kept copy
    theirs = bundle_file(f"e2e/lora-format/{released}").read_bytes().decode("utf-8")
    return ours.splitlines(keepends=True), theirs.splitlines(keepends=True)


def listed_differences() -> dict[str, list[int]]:
    """Line numbers listed in the golden file (`- valid.txt line 17`), per released file."""
    listed: dict[str, list[int]] = {name: [] for name in E2E}
    for name, n in re.findall(r"^- (\S+\.txt) line (\d+)$", GOLDEN.read_text(encoding="utf-8"), re.M):
        listed[name].append(int(n))
    return listed


@pytest.mark.parametrize("released", E2E)
def test_e2e_lines_match_the_released_file(released):
    ours, theirs = e2e_pair(released)
    _, lines, matching = E2E[released]
    assert len(ours) == len(theirs) == lines
    assert all(line.endswith(" \n") for line in ours)  # LF ends, a space before each, a final newline
    differing = [n for n, (a, b) in enumerate(zip(ours, theirs, strict=True), 1) if a != b]
    assert lines - len(differing) == matching  # the measured count: a regression fails here
    assert (lines - len(differing)) / lines >= 0.99
    assert differing == listed_differences()[released]


@pytest.mark.parametrize("released", E2E)
def test_e2e_whole_file_is_byte_identical(released):
    ours, theirs = e2e_pair(released)
    assert "".join(ours).encode("utf-8") == bundle_file(f"e2e/lora-format/{released}").read_bytes()


@pytest.mark.parametrize("released", WEBNLG_SOURCES)
def test_webnlg_json_is_byte_identical(released):
    sources = WEBNLG_SOURCES[released]
    paths = bundle_file(sources) if isinstance(sources, str) else [bundle_file(s) for s in sources]
    expected = bundle_file(f"webnlg/lora-format/{released}").read_bytes()
    assert webnlg_json(paths).encode("utf-8") == expected


# --- the pieces, and errors (no bundle needed) -----------------------------------------------------------------


def test_e2e_line_details():
    mr = "name[Café Rouge], eatType[coffee shop], priceRange[more than £30], customer rating[5 out of 5], near[Ranch]"
    assert e2e_mr(mr) == (
        "name : Café Rouge | Type : coffee shop | price : more than £ 30 | customer rating : 5 out of 5 | near : Ranch"
    )
    assert e2e_line("name[Zizzi]", "It's 'Zizzi'.") == "name : Zizzi||It 's ' Zizzi ' . "
    assert e2e_reference("It's   'Zizzi'.", "spacy") == "It 's ' Zizzi ' ."
    assert e2e_reference("There is a place. it is in the city. rated 5. in the centre") == (
        "There is a place . it is in the city . rated 5. in the centre"
    )


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("devset.csv", 'mr,ref\n"name[A], food[B]",Fine.\n"name[A] food[B]",Bad.\n', r"devset\.csv row 3 is malformed"),
        ("devset.csv", "MR\nname[A]\n", r"devset\.csv has no `ref` column"),
        ("devset.csv", "mr,ref\nname[A],\n", r"devset\.csv is malformed: row 2 has no reference"),
        ("devset.csv", "a,b\nname[A],x\n", r"devset\.csv is malformed: columns"),
        ("trainset.csv", "mr,ref\nname[A],x\n", r"trainset\.csv: no released LoRA file is known"),
    ],
)
def test_e2e_text_errors_name_the_file(tmp_path, name, text, message):
    with pytest.raises(TaskError, match=message) as err:
        e2e_text(write(tmp_path, name, text))
    assert "\n" not in str(err.value)


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Kept conversions go to the test's folder, not the user's cache."""
    monkeypatch.setenv("LORA_CACHE_DIR", str(tmp_path / "cache"))


def test_a_conversion_is_kept_on_disk_and_made_again_when_its_inputs_change(tmp_path, monkeypatch):
    path = write(tmp_path, "devset.csv", "mr,ref\nname[A],A isn't 5-star.\n")
    fresh = e2e_text(path, keep=False)
    assert fresh == "name : A||A isn 't 5 - star . \n" and not (tmp_path / "cache").exists()
    assert e2e_text(path) == fresh
    copy = converted_copy(path.read_text(), "moses")
    assert copy.read_text(encoding="utf-8") == fresh
    assert list(copy.parent.iterdir()) == [copy]  # written whole and renamed: no temporary file left
    nlg_released._kept.cache_clear()  # as a new process: the copy on disk is what is read
    copy.write_text("planted\n", encoding="utf-8")
    assert e2e_text(path) == "planted\n"
    path.write_text("mr,ref\nname[B],B isn't.\n")  # an edited file is converted again
    assert e2e_text(path) == "name : B||B isn 't . \n"
    assert e2e_text(path, "spacy") == "name : B||B is n't . \n"  # so is the same file under the other tokenizer
    assert len(list(copy.parent.iterdir())) == 3
    before = converted_copy(path.read_text(), "moses")
    monkeypatch.setattr(nlg_released, "_library_version", lambda name: f"{name}==0")  # another tokenizer version
    assert converted_copy(path.read_text(), "moses") != before


def test_a_conversion_that_cannot_be_kept_is_still_made(tmp_path, monkeypatch):
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("LORA_CACHE_DIR", str(tmp_path / "not-a-folder"))  # mkdir under it fails
    path = write(tmp_path, "devset.csv", "mr,ref\nname[C],C is fine.\n")
    assert e2e_text(path) == "name : C||C is fine . \n"


def test_e2e_tokenizer_is_chosen_or_refused(tmp_path):
    path = write(tmp_path, "trainset.csv", "mr,ref\nname[A],A isn't 5-star.\n")
    assert e2e_text(path, "moses") == "name : A||A isn 't 5 - star . \n"
    assert e2e_text(path, "spacy") == "name : A||A is n't 5-star . \n"
    with pytest.raises(TaskError, match="unknown E2E tokenizer 'nltk'"):
        e2e_text(path, "nltk")


BAD = r"x\.xml is malformed: "
ENTRY = (
    '<entry category="C" eid="Id1" size="1">{}<modifiedtripleset><mtriple>{}</mtriple></modifiedtripleset>{}</entry>'
)


@pytest.mark.parametrize(
    "xml, message",
    [
        ("<benchmark><entries></entries></benchmark>", BAD + "no <entry>"),
        ("<benchmark><entries>", r"x\.xml is not well-formed XML"),
        (ENTRY.format("", "a | b", ""), BAD + r"<mtriple> 'a \| b' is not"),
        (ENTRY.format("", "a | b | c", '<lex comment="good">t</lex>'), BAD + "an <lex> lacks its 'lid'"),
        ('<entry eid="Id1" size="1"><modifiedtripleset/></entry>', BAD + "an <entry> lacks its 'category'"),
        ('<entry category="C" eid="Id1" size="1"></entry>', BAD + "entry Id1 has 0 <modifiedtripleset>"),
    ],
)  # fmt: skip
def test_webnlg_errors_name_the_file(tmp_path, xml, message):
    with pytest.raises(TaskError, match=message) as err:
        webnlg_json([write(tmp_path, "x.xml", xml)])
    assert "\n" not in str(err.value)


def test_webnlg_numbers_entries_across_files(tmp_path):
    one = ENTRY.format("", "a | b | c", '<lex comment="good" lid="Id1">A b c.</lex>')
    paths = [write(tmp_path, f"{i}.xml", f"<benchmark><entries>{one}</entries></benchmark>") for i in (1, 2)]
    text = webnlg_json(paths)
    assert '"1": {' in text and '"2": {' in text and not text.endswith("\n")
    assert '"originaltripleset": []' in text and '"shape": "NA"' in text
