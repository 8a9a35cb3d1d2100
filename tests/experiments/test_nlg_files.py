"""NLG readers (E2E, WebNLG 2017, DART) on the released files, their errors, and fuzzing for clean failures."""

from __future__ import annotations

import csv
import json
import re
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from experiments.paths import data_dir
from experiments.tasks.base import TaskError
from experiments.tasks.nlg_files import Record, read_dart, read_e2e, read_webnlg

WEBNLG = "webnlg/webnlg_challenge_2017"

# file under data_dir() -> (records, references), from ../shared/data/README.md (E2E MRs counted there too).
COUNTS = {
    (read_e2e, "e2e/trainset.csv"): (4_862, 42_061),
    (read_e2e, "e2e/devset.csv"): (547, 4_672),
    (read_e2e, "e2e/testset_w_refs.csv"): (630, 4_693),
    (read_e2e, "e2e/testset.csv"): (630, 0),
    (read_e2e, "e2e/lora-format/valid.txt"): (547, 4_672),
    (read_e2e, "e2e/lora-format/test.txt"): (630, 4_693),
    (read_webnlg, f"{WEBNLG}/train"): (6_940, 18_102),
    (read_webnlg, f"{WEBNLG}/dev"): (872, 2_268),
    (read_webnlg, f"{WEBNLG}/test/testdata_with_lex.xml"): (1_862, 4_928),
    (read_webnlg, f"{WEBNLG}/test/testdata_unseen_with_lex.xml"): (891, 2_433),
    (read_webnlg, f"{WEBNLG}/test/testdata_no_lex.xml"): (1_862, 0),
    (read_webnlg, "webnlg/lora-format/train.json"): (6_940, 18_102),
    (read_webnlg, "webnlg/lora-format/dev.json"): (872, 2_268),
    (read_webnlg, "webnlg/lora-format/test.json"): (1_862, 4_928),
    (read_dart, "dart/dart-v1.1.1-full-dev.json"): (2_768, 6_980),
    (read_dart, "dart/dart-v1.1.1-full-dev.xml"): (2_768, 6_980),
    (read_dart, "dart/dart-v1.1.1-full-test.xml"): (5_097, 12_552),
}

FIRST_CONTEXT = {
    "e2e/devset.csv": "name[Alimentum], area[city centre], familyFriendly[no]",
    "e2e/lora-format/test.txt": "name : Blue Spice | Type : coffee shop | area : city centre",
    f"{WEBNLG}/dev": "Aarhus : leaderName : Jacob_Bundsgaard",  # LoRA's converter keeps the underscores
    "dart/dart-v1.1.1-full-dev.json": "Mars Hill College : joined : 1973 | Mars Hill College : location : "
    "Mars Hill, North Carolina",  # relations lower-cased as LoRA's converter does
}


@cache
def load(reader, rel: str) -> list[Record]:
    """Each released file once per session (several tests compare the same files)."""
    path = data_dir() / rel
    if not path.exists():
        pytest.skip(f"{path} not found (the shared data bundle is absent; set LORA_DATA_DIR)")
    return reader(path)


@pytest.mark.parametrize("reader, rel", list(COUNTS), ids=[rel for _, rel in COUNTS])
def test_released_files_give_the_documented_counts(reader, rel):
    records = load(reader, rel)
    assert (len(records), sum(len(r.references) for r in records)) == COUNTS[reader, rel]
    assert all(r.context for r in records)
    if reader is not read_webnlg:  # WebNLG entries may repeat triples; E2E MRs are grouped, DART has no repeats
        assert reader is read_dart or len({r.context for r in records}) == len(records)
    if rel in FIRST_CONTEXT:
        assert records[0].context == FIRST_CONTEXT[rel]


@pytest.mark.parametrize("split, name", [("train", "train"), ("dev", "dev"), ("test/testdata_with_lex.xml", "test")])
def test_webnlg_xml_and_lora_json_give_equal_records(split, name):
    assert load(read_webnlg, f"{WEBNLG}/{split}") == load(read_webnlg, f"webnlg/lora-format/{name}.json")


def test_webnlg_test_splits_into_971_seen_and_891_unseen_entries_the_unseen_file_holds():
    test = load(read_webnlg, f"{WEBNLG}/test/testdata_with_lex.xml")
    unseen = [r for r in test if not r.seen]
    assert (len(test) - len(unseen), len(unseen)) == (971, 891)
    assert unseen == load(read_webnlg, f"{WEBNLG}/test/testdata_unseen_with_lex.xml")  # same entries, same order
    assert {r.category for r in unseen} == {"Artist", "Athlete", "CelestialBody", "MeanOfTransportation", "Politician"}
    bare = load(read_webnlg, f"{WEBNLG}/test/testdata_no_lex.xml")
    assert [(r.context, r.category) for r in bare] == [(r.context, r.category) for r in test]


def test_webnlg_train_is_all_seen_and_good_only_drops_the_tofix_lexes():
    train = load(read_webnlg, f"{WEBNLG}/train")
    assert all(r.seen for r in train)
    path = data_dir() / f"{WEBNLG}/train"
    good = read_webnlg(path, good_only=True)
    # 77 "toFix" lexes; 5 entries had only those and give LoRA no training line.
    assert (len(good), sum(len(r.references) for r in good)) == (6_935, 18_025)
    spaced = read_webnlg(data_dir() / f"{WEBNLG}/dev", entity_spaces=True)
    assert spaced[0].context == "Aarhus : leaderName : Jacob Bundsgaard"


def test_dart_dev_json_and_xml_give_equal_records():
    assert load(read_dart, "dart/dart-v1.1.1-full-dev.json") == load(read_dart, "dart/dart-v1.1.1-full-dev.xml")


def test_e2e_lora_text_groups_like_the_official_csv():
    lora = load(read_e2e, "e2e/lora-format/test.txt")
    official = load(read_e2e, "e2e/testset_w_refs.csv")
    assert [len(r.references) for r in lora] == [len(r.references) for r in official]


# --- errors on small synthetic files ---------------------------------------------------------------------------

XML_ENTRY = (
    '<entry category="Food" eid="Id1"><modifiedtripleset><mtriple>A | b | C</mtriple></modifiedtripleset>{}</entry>'
)


def webnlg_json(entries: list) -> str:
    return json.dumps({"entries": [{str(i): e} for i, e in enumerate(entries, 1)]})


def entry_json(lexes: list[str]) -> dict:
    triple = {"subject": "A", "property": "b", "object": "C"}
    lexicalisations = [{"comment": "good", "lex": x} for x in lexes]
    return {"category": "Food", "modifiedtripleset": [triple], "lexicalisations": lexicalisations}


BAD_FILES = [  # (reader, file name, content, message pattern)
    (read_e2e, "e.csv", "", "is empty"),
    (read_e2e, "e.csv", b"mr,ref\nname[\xff],x\n", "is not valid UTF-8"),
    (read_e2e, "e.csv", "meaning,text\na,b\n", "columns"),
    (read_e2e, "e.csv", "mr,ref\n", "no data rows"),
    (read_e2e, "e.csv", 'mr,ref\n"name[A]",\n', "row 2 has no reference"),
    (read_e2e, "e.csv", "mr,ref\nname[A],x,y\n", "row 2 has 3 columns"),
    (read_e2e, "e.txt", "name : A||\n", "line 1 has no reference"),
    (read_e2e, "e.txt", "name : A||x\nname : B\n", "line 2 is not `mr||ref`"),
    (read_webnlg, "w.xml", "<benchmark><entries><entry>", "not well-formed XML"),
    (read_webnlg, "w.xml", "<benchmark><entries/></benchmark>", "no <entry>"),
    (read_webnlg, "w.xml", f"<benchmark>{XML_ENTRY.format('<lex>x</lex>')}{XML_ENTRY.format('')}</benchmark>",
     "entry 2 has no reference"),
    (read_webnlg, "w.xml", XML_ENTRY.replace(" | b | ", " b ").format(""), "is not `s | p | o`"),
    (read_webnlg, "w.xml", '<!DOCTYPE b [<!ENTITY x "y">]><b>&x;</b>', "not well-formed XML"),  # defusedxml
    (read_webnlg, "w.json", '{"entries": [', "not valid JSON"),
    (read_webnlg, "w.json", "[]", '"entries" list'),
    (read_webnlg, "w.json", webnlg_json([entry_json(["x"]), entry_json([])]), "entry 2 has no reference"),
    (read_webnlg, "w.json", json.dumps({"entries": [{"2": entry_json(["x"])}]}), 'entry 1 lacks key "1"'),
    (read_dart, "d.json", "[{]", "not valid JSON"),
    (read_dart, "d.json", '{"tripleset": []}', "not a list"),
    (read_dart, "d.json", '[{"tripleset": [["a", "b"]], "annotations": []}]', "not \\[s, p, o\\]"),
    (read_dart, "d.json", '[{"tripleset": [], "annotations": [{"text": "x"}]}]', "no triples"),
    (read_dart, "d.json", '[{"tripleset": [["a","b","c"]], "annotations": [{"source": "x"}]}]', "lacks its text"),
    (read_dart, "d.xml", "\r\n<benchmark>\r\n<entry><lex>x</lex></entry></benchmark>", "no <modifiedtripleset>"),
]  # fmt: skip


@pytest.mark.parametrize("reader, name, content, message", BAD_FILES, ids=[b[3] for b in BAD_FILES])
def test_malformed_files_fail_with_one_line_naming_the_file(tmp_path, reader, name, content, message):
    file = tmp_path / name
    file.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(TaskError, match=re.escape(str(file))) as err:
        reader(file)
    assert re.search(message, str(err.value)) and "\n" not in str(err.value)


@pytest.mark.parametrize("reader", [read_e2e, read_webnlg, read_dart])
def test_missing_files_and_folders_fail_clearly(tmp_path, reader):
    with pytest.raises(TaskError, match=f"{re.escape(str(tmp_path / 'nope.xml'))} not found"):
        reader(tmp_path / "nope.xml")
    if reader is read_webnlg:  # a folder is a split here, but it must hold */*.xml
        with pytest.raises(TaskError, match=f"{re.escape(str(tmp_path))} holds no"):
            reader(tmp_path)
    else:
        with pytest.raises(TaskError, match="is a folder"):
            reader(tmp_path)


def test_small_files_read_as_expected(tmp_path):
    (tmp_path / "t.csv").write_text('mr,ref\n"name[A], food[B]",one\nname[C],two\n"name[A], food[B]","th\nree"\n')
    assert read_e2e(tmp_path / "t.csv") == [Record("name[A], food[B]", ("one", "th\nree")), Record("name[C]", ("two",))]
    (tmp_path / "t.txt").write_text("name : A||one . \r\nname : A||two\n\n")  # LoRA strips the line, CRLF too
    assert read_e2e(tmp_path / "t.txt") == [Record("name : A", ("one .", "two"))]
    tofix = XML_ENTRY.format('<lex comment="toFix">x</lex>')
    (tmp_path / "w.xml").write_text(f"<benchmark>{tofix}</benchmark>")
    assert read_webnlg(tmp_path / "w.xml") == [Record("A : b : C", ("x",), "Food", True)]
    assert read_webnlg(tmp_path / "w.xml", good_only=True) == []


# --- fuzzing: any input gives records or a TaskError, never another exception ----------------------------------

READERS = [read_e2e, read_webnlg, read_dart]
SUFFIXES = [".csv", ".txt", ".xml", ".json", ".dat"]
TOKENS = ["<benchmark>", "<entries>", "<entry category='Food'>", "</entry>", "<modifiedtripleset>", "<mtriple>",
          "</mtriple>", "</modifiedtripleset>", "<lex comment='good'>", "</lex>", "<lex/>", "A | b | C", " | ", "||",
          "mr,ref\n", "MR\n", '"', ",", "\n", "\r\n", "name[A]", "x", "{", "}", "[", "]", ":", '"entries"',
          '"tripleset"', '"annotations"', '"text"', '"1"', "null", "&amp;", "&#39;", "\ufeff", "\x00"]  # fmt: skip
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.sampled_from(["1", "text", "good", "A", ""]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "entries",
                    "1",
                    "2",
                    "tripleset",
                    "annotations",
                    "text",
                    "lex",
                    "comment",
                    "category",
                    "modifiedtripleset",
                    "lexicalisations",
                    "subject",
                    "property",
                    "object",
                ]
            ),
            inner,
            max_size=5,
        )
    ),  # fmt: skip
    max_leaves=20,
)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def feed(tmp_path: Path, reader, suffix: str, content: bytes) -> None:
    file = tmp_path / f"fuzz{suffix}"
    file.write_bytes(content)
    try:
        records = reader(file)
    except TaskError as err:
        assert str(file) in str(err)
        return
    assert isinstance(records, list) and all(isinstance(r, Record) for r in records)


@FUZZ
@given(reader=st.sampled_from(READERS), suffix=st.sampled_from(SUFFIXES), content=st.binary(max_size=300))
def test_fuzz_random_bytes(tmp_path, reader, suffix, content):
    feed(tmp_path, reader, suffix, content)


@FUZZ
@given(reader=st.sampled_from(READERS), suffix=st.sampled_from(SUFFIXES), parts=st.lists(st.sampled_from(TOKENS)))
def test_fuzz_format_shaped_text(tmp_path, reader, suffix, parts):
    feed(tmp_path, reader, suffix, "".join(parts).encode())


@FUZZ
@given(reader=st.sampled_from([read_webnlg, read_dart]), value=JSON)
def test_fuzz_json_structures(tmp_path, reader, value):
    feed(tmp_path, reader, ".json", json.dumps(value).encode())


@FUZZ
@given(rows=st.lists(st.tuples(st.text(max_size=20), st.text(max_size=20).filter(str.strip)), min_size=1))
def test_fuzz_csv_round_trip_groups_by_mr_in_first_seen_order(tmp_path, rows):
    file = tmp_path / "fuzz.csv"
    with open(file, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("mr", "ref"), *rows])
    expected: dict[str, list[str]] = {}
    for mr, ref in rows:
        expected.setdefault(mr, []).append(ref)
    assert read_e2e(file) == [Record(mr, tuple(refs)) for mr, refs in expected.items()]
