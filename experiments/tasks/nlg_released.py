"""Rebuild microsoft/LoRA's released NLG data files from the official data sets, byte for byte.

LoRA's GPT-2 experiments (`examples/NLG` of microsoft/LoRA) ship their data already converted:

- E2E NLG: `data/e2e/{train,valid,test}.txt`, one `mr||ref` line per row of the official CSV
  (`trainset.csv`, `devset.csv`, `testset_w_refs.csv` of tuetschek/e2e-dataset), same rows, same order, LF line
  ends and a final newline. The MR's attributes keep their order; three are renamed (`eatType` -> `Type`,
  `priceRange` -> `price`, `familyFriendly` -> `family friendly`) and written `key : value`, joined by ` | `.
  Values and references are tokenised (tokens joined by single spaces), and every line ends in a space.
  The two files we can check were tokenised by two different tools (found by matching every line):
  `valid.txt` by the Moses tokenizer run on Punkt sentences (`isn 't`, `£ 20- £ 25`), `test.txt` by the English
  tokenizer of a spaCy from before mid-2020 (`is n't`, `£ 20-£25`, `5-star`). `train.txt` (over 4 MiB) is not in
  the data bundle, so which tool made it is unknown; `e2e_text` refuses to guess.
- WebNLG 2017: `data/webnlg_challenge_2017/{train,dev,test}.json`, the official XML as the WebNLG corpus
  reader's JSON export writes it: `{"entries": [{"1": {...}}, ...]}` numbered from 1 over all files in
  order, 4-space indent, sorted keys, UTF-8 without escapes, no final newline (train: every
  `train/*/*.xml` in sorted path order; dev likewise; test: `test/testdata_with_lex.xml`).

Libraries: sacremoses (the Moses tokenizer's Python port), NLTK's Punkt and spaCy; each is set up here, none
is reimplemented. What is written by hand is only the file layout (MR renames, `||`, the JSON record), which no
library produces.
"""

from __future__ import annotations

import inspect
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from functools import cache, lru_cache
from importlib import metadata
from pathlib import Path

from ..paths import kept_path, kept_text
from .base import TaskError
from .nlg_files import csv_pairs, parse_xml, read_data_file, split_triple

# --- E2E ------------------------------------------------------------------------------------------------------

# The released MRs rename three attributes; the others (name, food, customer rating, area, near) stay.
E2E_RENAMES = {"eatType": "Type", "priceRange": "price", "familyFriendly": "family friendly"}

# Which tokenizer made which released file, by the official CSV it comes from (see the module docstring).
RELEASED_TOKENIZER = {"devset.csv": "moses", "testset_w_refs.csv": "spacy"}

_MR_ITEM = re.compile(r"([^\[\]]+)\[([^\[\]]*)\]")


@cache
def _moses() -> Callable[[str], list[str]]:
    from nltk.tokenize.punkt import PunktSentenceTokenizer
    from sacremoses import MosesTokenizer

    # An untrained Punkt (no abbreviation list, no model download) splits sentences as valid.txt was split:
    # "food. it" is a break, "5. in" (a number before a lower-case word) is not. Moses alone would keep both.
    sentences, moses = PunktSentenceTokenizer(), MosesTokenizer(lang="en")

    def tokenize(text: str) -> list[str]:
        # aggressive_dash_splits: "family-friendly" -> "family @-@ friendly"; escape=False keeps ' and " as they are
        words = (moses.tokenize(s, aggressive_dash_splits=True, escape=False) for s in sentences.tokenize(text))
        tokens = [t for sentence in words for t in sentence]
        return ["-" if t == "@-@" else t for t in tokens]  # the released file has a plain "-" for Moses's "@-@"

    return tokenize


@cache
def _spacy() -> Callable[[str], list[str]]:
    import spacy
    from spacy.lang.punctuation import TOKENIZER_INFIXES
    from spacy.util import compile_infix_regex

    nlp = spacy.blank("en")
    # Since explosion/spaCy PR #5770 (July 2020) English splits a hyphen after a digit too ("5 - star"); test.txt
    # keeps "5-star", as English did when it used the language-independent infixes that spaCy still ships.
    nlp.tokenizer.infix_finditer = compile_infix_regex(TOKENIZER_INFIXES).finditer
    return lambda text: [t.text for t in nlp.tokenizer(text) if not t.is_space]


TOKENIZERS: dict[str, Callable[[], Callable[[str], list[str]]]] = {"moses": _moses, "spacy": _spacy}


def _tokenizer(name: str) -> Callable[[str], list[str]]:
    if name not in TOKENIZERS:
        raise TaskError(f"unknown E2E tokenizer {name!r}; expected one of {sorted(TOKENIZERS)}")
    return TOKENIZERS[name]()


def e2e_reference(text: str, tokenizer: str = "moses") -> str:
    """A reference tokenised as in the released files (tokens joined by single spaces; no trailing space).

    >>> e2e_reference("Alimentum isn't family-friendly. it's in the £20-£25 range.")
    "Alimentum isn 't family - friendly . it 's in the £ 20- £ 25 range ."
    >>> e2e_reference("Alimentum isn't family-friendly. it's a 5-star, £20-£25 place.", "spacy")
    "Alimentum is n't family - friendly . it 's a 5-star , £ 20-£25 place ."
    """
    return " ".join(_tokenizer(tokenizer)(text))


@lru_cache(maxsize=1 << 14)
def _mr_value(value: str, tokenizer: str) -> str:
    """An MR value tokenised: E2E's few hundred values recur in every row (8 per row over 42,061 rows of the
    training set), and tokenising is the cost of a conversion (Punkt and Moses are regular expressions)."""
    return e2e_reference(value, tokenizer)


def e2e_mr(mr: str, tokenizer: str = "moses") -> str:
    """An official MR (`key[value], ...`) as the released files write it.

    >>> e2e_mr("name[Alimentum], eatType[pub], priceRange[£20-25], familyFriendly[no]")
    'name : Alimentum | Type : pub | price : £ 20 - 25 | family friendly : no'
    >>> e2e_mr("name[Alimentum] area[riverside]")
    Traceback (most recent call last):
    ...
    experiments.tasks.base.TaskError: MR item 'name[Alimentum] area[riverside]' is not `key[value]`
    """
    items = []
    for item in mr.split(", "):
        match = _MR_ITEM.fullmatch(item)
        if not match:
            raise TaskError(f"MR item {item!r} is not `key[value]`")
        key, value = match.groups()
        items.append(f"{E2E_RENAMES.get(key, key)} : {_mr_value(value, tokenizer)}")
    return " | ".join(items)


def e2e_line(mr: str, ref: str, tokenizer: str = "moses") -> str:
    """One released line, without its newline; note the space at its end.

    >>> e2e_line("name[Alimentum], area[city centre], familyFriendly[no]",
    ...          "There is a place in the city centre, Alimentum, that is not family-friendly.")
    'name : Alimentum | area : city centre | family friendly : no||There is a place in the city centre , \
Alimentum , that is not family - friendly . '
    """
    return f"{e2e_mr(mr, tokenizer)}||{e2e_reference(ref, tokenizer)} "


def e2e_text(csv_path: str | Path, tokenizer: str | None = None, *, keep: bool = True) -> str:
    """The whole released file made from an official `mr,ref` CSV: one line per row, LF, final newline.

    `tokenizer`: "moses" or "spacy"; by default the one that made the released file of that CSV
    (`RELEASED_TOKENIZER`, by file name). A malformed row raises TaskError naming the file and the row.
    `keep`: reuse a conversion kept in this process or on disk (`converted_copy`); False converts afresh.
    """
    file, text = read_data_file(csv_path)
    tokenizer = tokenizer or RELEASED_TOKENIZER.get(file.name)
    if tokenizer is None:
        raise TaskError(f"{file}: no released LoRA file is known for this CSV; pass tokenizer='moses' or 'spacy'")
    return _kept(file, text, tokenizer) if keep else _convert(file, text, tokenizer)


@lru_cache(maxsize=4)
def _kept(file: Path, text: str, tokenizer: str) -> str:
    """`e2e_text` kept in the process and on disk: converting the training set's 42,061 rows takes 20-45 s of
    CPU, and every new process would pay it (each rank of a torchrun launch, each job of a sweep), while a run
    reads its splits more than once. Keyed by the text itself, so an edited file is converted again."""
    return kept_text(converted_copy(text, tokenizer), lambda: _convert(file, text, tokenizer))


def converted_copy(text: str, tokenizer: str) -> Path:
    """Where the conversion of `text` is kept: under <cache>/e2e-released/, named by a digest of the text, the
    tokenizer, the source of the conversion code and the versions of the tokenizing libraries, so that a change in
    any of them converts again instead of reading an old copy."""
    versions = [_library_version(name) for name in ("sacremoses", "nltk", "spacy")]
    return kept_path("e2e-released", [text, tokenizer, *versions], [__file__, inspect.getsourcefile(csv_pairs)])


def _library_version(name: str) -> str:
    try:
        return f"{name}=={metadata.version(name)}"
    except metadata.PackageNotFoundError:
        return f"{name} absent"


def _convert(file: Path, text: str, tokenizer: str) -> str:
    lines = []
    for n, (mr, ref) in enumerate(csv_pairs(file, text), 2):
        if ref is None:
            raise TaskError(f"{file} has no `ref` column; the released files need references")
        try:
            lines.append(e2e_line(mr, ref, tokenizer) + "\n")
        except TaskError as err:
            raise TaskError(f"{file} row {n} is malformed: {err}") from None
    return "".join(lines)


# --- WebNLG 2017 ----------------------------------------------------------------------------------------------


def _triple(file: Path, element: ET.Element) -> dict[str, str]:
    s, p, o = split_triple(file, element.text or "")
    return {"subject": s, "property": p, "object": o}


def _attribute(file: Path, element: ET.Element, name: str) -> str:
    value = element.get(name)
    if value is None:
        raise TaskError(f"{file} is malformed: an <{element.tag}> lacks its {name!r} attribute")
    return value


def _webnlg_entry(file: Path, entry: ET.Element) -> dict:
    """One entry as the corpus reader's JSON export writes it (this XML has no shape, links or dbpedialinks).

    >>> xml = ('<entry category="Airport" eid="Id2" size="1"><originaltripleset><otriple>A | b | "2.0"</otriple>'
    ...        '</originaltripleset><modifiedtripleset><mtriple>A | b | 2.0</mtriple></modifiedtripleset>'
    ...        '<lex comment="good" lid="Id1">A is 2.0.</lex></entry>')
    >>> entry = _webnlg_entry(Path("x.xml"), ET.fromstring(xml))
    >>> entry["originaltriplesets"], entry["lexicalisations"]
    ({'originaltripleset': [[{'subject': 'A', 'property': 'b', 'object': '"2.0"'}]]}, \
[{'comment': 'good', 'lang': '', 'lex': 'A is 2.0.', 'xml_id': 'Id1'}])
    """
    modified = entry.findall("modifiedtripleset")
    if len(modified) != 1:
        raise TaskError(f"{file} is malformed: entry {entry.get('eid')} has {len(modified)} <modifiedtripleset>")
    return {
        "category": _attribute(file, entry, "category"),
        "dbpedialinks": [],
        "lexicalisations": [
            {
                "comment": lex.get("comment", ""),
                "lang": lex.get("lang", ""),
                "lex": lex.text or "",
                "xml_id": _attribute(file, lex, "lid"),
            }
            for lex in entry.findall("lex")
        ],  # fmt: skip
        "links": [],
        "modifiedtripleset": [_triple(file, t) for t in modified[0].iter("mtriple")],
        "originaltriplesets": {
            "originaltripleset": [
                [_triple(file, t) for t in s.iter("otriple")] for s in entry.findall("originaltripleset")
            ]
        },
        "shape": "NA",
        "shape_type": "NA",
        "size": _attribute(file, entry, "size"),
        "xml_id": _attribute(file, entry, "eid"),
    }


def webnlg_files(path: str | Path) -> list[Path]:
    """The XML files of a split as the released JSON reads them: a folder's `*/*.xml` in sorted order, or a file."""
    path = Path(path)
    if not path.is_dir():
        return [path]
    files = sorted(path.glob("*/*.xml"))
    if not files:
        raise TaskError(f"{path} holds no */*.xml files; put the WebNLG 2017 split folder there")
    return files


def webnlg_json(xml_paths: str | Path | Iterable[str | Path]) -> str:
    """The released JSON text of the given XML files (entries numbered from 1 across them, in order).

    `xml_paths`: XML files in order, or one split folder (see `webnlg_files`).
    """
    paths = webnlg_files(xml_paths) if isinstance(xml_paths, str | Path) else [Path(p) for p in xml_paths]
    entries = []
    for path in paths:
        file, text = read_data_file(path)
        found = list(parse_xml(file, text).iter("entry"))
        if not found:
            raise TaskError(f"{file} is malformed: no <entry> found; re-download the released file")
        entries += [_webnlg_entry(file, e) for e in found]
    data = {"entries": [{str(i): entry} for i, entry in enumerate(entries, 1)]}
    return json.dumps(data, indent=4, sort_keys=True, ensure_ascii=False)
