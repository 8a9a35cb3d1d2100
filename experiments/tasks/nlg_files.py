"""Readers for the NLG data sets of the LoRA paper (E2E, WebNLG 2017, DART), one `Record` per distinct input.

Formats and where they come from:

- E2E NLG (Novikova et al., 2017), official release `tuetschek/e2e-dataset`: CSV with header `mr,ref`
  (`trainset.csv`, `devset.csv`, `testset_w_refs.csv`; one row per reference) or only `MR` (`testset.csv`,
  unlabelled). microsoft/LoRA's `examples/NLG/data/e2e/{train,valid,test}.txt`: one `mr||ref` per line, already
  tokenised, read as its `src/format_converting_e2e.py` does (`line.strip().split('||')`).
- WebNLG challenge 2017 (Gardent et al., 2017), official XML: `<entry category=...>` with `<modifiedtripleset>`
  of `<mtriple>s | p | o</mtriple>` and `<lex comment=...>` texts; the train/dev splits are folders of
  `<n>triples/*.xml`. microsoft/LoRA's `examples/NLG/data/webnlg_challenge_2017/*.json` is the same data as JSON
  (`{"entries": [{"1": {"category", "modifiedtripleset": [{subject, property, object}], "lexicalisations":
  [{comment, lex, ...}], ...}}, ...]}`).
- DART v1.1.1 (Nan et al., 2021), `Yale-LILY/dart`: JSON, a list of `{tripleset: [[s, p, o], ...],
  subtree_was_extended, annotations: [{source, text}]}`, and the WebNLG-like XML of the same entries.

Contexts follow microsoft/LoRA's converters (`src/format_converting_{webnlg,dart}.py`): triples as
`s : p : o | s : p : o`, entity names as in the file (underscores are kept: LoRA does not replace them; pass
`entity_spaces=True` to get spaces), DART relations lower-cased as LoRA does. WebNLG keeps every `lex` by default
(the release's counts); LoRA trains only on `comment="good"` ones (`good_only=True`).

A file whose inputs all lack references (E2E `testset.csv`, WebNLG `testdata_no_lex.xml`) gives records with empty
`references`; a file where only some inputs lack them is malformed and raises `TaskError`.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import defusedxml.ElementTree as SafeET

from .base import TaskError, read_data

# The 10 categories of WebNLG 2017 train/dev; the test set adds 5 unseen ones.
SEEN_CATEGORIES = frozenset(
    ["Airport", "Astronaut", "Building", "City", "ComicsCharacter", "Food", "Monument", "SportsTeam", "University",
     "WrittenWork"]
)  # fmt: skip


@dataclass(frozen=True)
class Record:
    context: str  # the linearised input (E2E MR as in the file; triples "s : p : o | s : p : o")
    references: tuple[str, ...]  # all reference texts of this input (empty for an unlabelled test file)
    category: str | None = None  # WebNLG category (e.g. "Airport"); None for E2E/DART
    seen: bool | None = None  # WebNLG: category among the 10 training categories; None otherwise


# --- shared helpers -------------------------------------------------------------------------------------------


def read_data_file(path: str | Path) -> tuple[Path, str]:
    """The file's text, or a TaskError naming the file (missing, a folder, not UTF-8, empty)."""
    return Path(path), read_data(path, hint="put the released data file there or set LORA_DATA_DIR")


def _check(ok: bool, file: Path, what: str) -> None:
    if not ok:
        raise TaskError(f"{file} is malformed: {what}; re-download the released file")


def _group(pairs: Iterable[tuple[str, str | None]]) -> list[Record]:
    """Records from (context, reference-or-None) pairs, grouped by context in order of first appearance."""
    groups: dict[str, list[str]] = {}
    for context, ref in pairs:
        refs = groups.setdefault(context, [])
        if ref is not None:
            refs.append(ref)
    return [Record(c, tuple(r)) for c, r in groups.items()]


def _require_all_or_none(file: Path, records: list, name: str) -> None:
    """Unlabelled files have no references at all; a labelled file must give every input one."""
    bare = [i for i, r in enumerate(records) if not r.references]
    if bare and len(bare) < len(records):
        raise TaskError(f"{file}: {name} {bare[0] + 1} has no reference while others do; re-download the file")


def _triples(file: Path, triples: list[tuple[str, str, str]], entity_spaces: bool, lower: bool) -> str:
    def entity(x: str) -> str:
        return x.replace("_", " ") if entity_spaces else x

    _check(bool(triples), file, "an entry has no triples")
    return " | ".join(f"{entity(s)} : {p.lower() if lower else p} : {entity(o)}" for s, p, o in triples)


def parse_xml(file: Path, text: str) -> ET.Element:
    # defusedxml refuses entity declarations and DTDs; a str input makes the declared encoding irrelevant.
    try:
        return SafeET.fromstring(text)
    except (ET.ParseError, ValueError) as err:
        raise TaskError(f"{file} is not well-formed XML ({err}); re-download the released file") from None


def _parse_json(file: Path, text: str):
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        raise TaskError(f"{file} is not valid JSON ({err}); re-download the released file") from None


def _is_xml(file: Path, text: str) -> bool:
    return file.suffix.lower() == ".xml" or (file.suffix.lower() != ".json" and text.lstrip().startswith("<"))


# --- E2E ------------------------------------------------------------------------------------------------------


def read_e2e(path: str | Path) -> list[Record]:
    """E2E records, one per distinct MR: official CSV (`mr,ref` or `MR`) or LoRA's `mr||ref` text."""
    file, text = read_data_file(path)
    lora = file.suffix.lower() == ".txt" or (file.suffix.lower() != ".csv" and "||" in text.split("\n", 1)[0])
    records = _group(_lora_pairs(file, text) if lora else csv_pairs(file, text))
    _check(bool(records), file, "no data rows after the header")
    return records


def read_e2e_text(text: str, file: Path) -> list[Record]:
    """E2E records from the released `mr||ref` text (e.g. converted from a CSV by `nlg_released.e2e_text`)."""
    records = _group(_lora_pairs(file, text))
    _check(bool(records), file, "no data rows")
    return records


def _lora_pairs(file: Path, text: str):
    # Split as Python's text files do (LoRA's converter iterates a file): on \n, \r\n and \r only.
    for n, line in enumerate(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"), 1):
        if not line.strip():
            continue  # a trailing blank line is not an example
        items = line.strip().split("||")
        _check(len(items) == 2, file, f"line {n} is not `mr||ref`")
        _check(bool(items[1].strip()), file, f"line {n} has no reference")
        yield items[0], items[1]


def csv_pairs(file: Path, text: str):
    csv.field_size_limit(sys.maxsize)  # csv's default refuses a field over 128 KiB; a long text is still a text
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as err:
        raise TaskError(f"{file} is not valid CSV ({err}); re-download the released file") from None
    header = [h.strip().lower() for h in rows[0]] if rows else []
    _check(header in (["mr", "ref"], ["mr"]), file, f"columns {rows[0] if rows else []}, expected `mr,ref` or `MR`")
    for n, row in enumerate(rows[1:], 2):
        if not row:
            continue  # csv gives [] for a blank line
        _check(len(row) == len(header), file, f"row {n} has {len(row)} columns, expected {len(header)}")
        if len(header) == 2:
            _check(bool(row[1].strip()), file, f"row {n} has no reference")
        yield row[0], row[1] if len(header) == 2 else None


# --- WebNLG 2017 ----------------------------------------------------------------------------------------------


def read_webnlg(path: str | Path, *, good_only: bool = False, entity_spaces: bool = False) -> list[Record]:
    """WebNLG 2017 records, one per entry (entries with equal triples are not merged).

    `path`: a split folder (all `*/*.xml` in sorted path order), one XML file, or LoRA's JSON form of either.
    `good_only`: keep only `comment="good"` lexicalisations, as LoRA's converter does (an entry left without
    any is dropped, as it yields no training line there). `entity_spaces`: underscores in entities become spaces.
    """
    folder = Path(path)
    if folder.is_dir():
        files = sorted(folder.glob("*/*.xml"))
        if not files:
            raise TaskError(f"{folder} holds no */*.xml files; put the WebNLG 2017 split folder there")
        entries = [e for f in files for e in _webnlg_file(f)]
    else:
        entries = _webnlg_file(folder)
    return _webnlg_records(folder, entries, good_only, entity_spaces)


# An entry as both formats give it: category, [(s, p, o)], [(comment, lex)].
_Entry = tuple[str | None, list[tuple[str, str, str]], list[tuple[str, str]]]


def _webnlg_file(path: Path) -> list[_Entry]:
    file, text = read_data_file(path)
    entries = _webnlg_xml(file, text) if _is_xml(file, text) else _webnlg_json(file, text)
    _check(bool(entries), file, "no <entry> / entries found")
    return entries


def _webnlg_xml(file: Path, text: str) -> list[_Entry]:
    out = []
    for entry in parse_xml(file, text).iter("entry"):
        tripleset = entry.find("modifiedtripleset")
        _check(tripleset is not None, file, f"entry {entry.get('eid')} has no <modifiedtripleset>")
        triples = [split_triple(file, m.text or "") for m in tripleset.iter("mtriple")]
        lexes = [(lex.get("comment", "good"), lex.text or "") for lex in entry.findall("lex")]
        out.append((entry.get("category"), triples, lexes))
    return out


def split_triple(file: Path, text: str) -> tuple[str, str, str]:
    parts = text.split(" | ")  # as the WebNLG benchmark reader splits <mtriple> text
    _check(len(parts) == 3, file, f"<mtriple> {text!r} is not `s | p | o`")
    return parts[0], parts[1], parts[2]


def _webnlg_json(file: Path, text: str) -> list[_Entry]:
    data = _parse_json(file, text)
    _check(isinstance(data, dict) and isinstance(data.get("entries"), list), file, 'no top-level "entries" list')
    out = []
    for i, item in enumerate(data["entries"], 1):
        # LoRA's converter reads entry i as item[str(i)]; each item is a one-key dict.
        _check(isinstance(item, dict) and isinstance(item.get(str(i)), dict), file, f'entry {i} lacks key "{i}"')
        entry = item[str(i)]
        triples = entry.get("modifiedtripleset")
        lexes = entry.get("lexicalisations", [])
        _check(isinstance(triples, list) and isinstance(lexes, list), file, f"entry {i} lacks its triples or lexes")
        out.append((entry.get("category"), [_json_triple(file, i, t) for t in triples],
                    [_json_lex(file, i, lex) for lex in lexes]))  # fmt: skip
    return out


def _json_triple(file: Path, i: int, t) -> tuple[str, str, str]:
    keys = ("subject", "property", "object")
    _check(isinstance(t, dict) and all(isinstance(t.get(k), str) for k in keys), file, f"entry {i}: bad triple")
    return t["subject"], t["property"], t["object"]


def _json_lex(file: Path, i: int, lex) -> tuple[str, str]:
    _check(isinstance(lex, dict) and isinstance(lex.get("lex"), str), file, f"entry {i}: bad lexicalisation")
    comment = lex.get("comment", "good")
    return comment if isinstance(comment, str) else "good", lex["lex"]


def _webnlg_records(file: Path, entries: list[_Entry], good_only: bool, entity_spaces: bool) -> list[Record]:
    records = []
    for category, triples, lexes in entries:
        _check(category is None or isinstance(category, str), file, "an entry's category is not text")
        refs = tuple(text for comment, text in lexes if comment == "good" or not good_only)
        if good_only and lexes and not refs:
            continue  # every lex is "toFix": LoRA's converter writes no line for this entry
        context = _triples(file, triples, entity_spaces, lower=False)
        records.append(Record(context, refs, category, category in SEEN_CATEGORIES if category else None))
    _require_all_or_none(file, records, "entry")
    return records


# --- DART -----------------------------------------------------------------------------------------------------


def read_dart(path: str | Path, *, lower_relations: bool = True) -> list[Record]:
    """DART v1.1.1 records, one per entry (JSON or XML); relations lower-cased as LoRA's converter does."""
    file, text = read_data_file(path)
    entries = _dart_xml(file, text) if _is_xml(file, text) else _dart_json(file, text)
    _check(bool(entries), file, "no entries found")
    records = [Record(_triples(file, t, False, lower_relations), tuple(refs)) for t, refs in entries]
    _require_all_or_none(file, records, "entry")
    return records


def _dart_xml(file: Path, text: str) -> list[tuple[list[tuple[str, str, str]], list[str]]]:
    out = []
    for entry in parse_xml(file, text).iter("entry"):
        tripleset = entry.find("modifiedtripleset")
        _check(tripleset is not None, file, f"entry {entry.get('eid')} has no <modifiedtripleset>")
        triples = [split_triple(file, m.text or "") for m in tripleset.iter("mtriple")]
        out.append((triples, [lex.text or "" for lex in entry.findall("lex")]))
    return out


def _dart_json(file: Path, text: str) -> list[tuple[list[tuple[str, str, str]], list[str]]]:
    data = _parse_json(file, text)
    _check(isinstance(data, list), file, "the top level is not a list of entries")
    out = []
    for i, entry in enumerate(data, 1):
        _check(isinstance(entry, dict), file, f"entry {i} is not an object")
        triples, notes = entry.get("tripleset"), entry.get("annotations", [])
        _check(isinstance(triples, list) and isinstance(notes, list), file, f"entry {i} lacks tripleset/annotations")
        ok = all(isinstance(t, list) and len(t) == 3 and all(isinstance(x, str) for x in t) for t in triples)
        _check(ok, file, f"entry {i}: a triple is not [s, p, o]")
        _check(all(isinstance(a, dict) and isinstance(a.get("text"), str) for a in notes), file,
               f"entry {i}: an annotation lacks its text")  # fmt: skip
        out.append(([tuple(t) for t in triples], [a["text"] for a in notes]))
    return out
