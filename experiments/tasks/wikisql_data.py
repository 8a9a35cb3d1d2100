"""WikiSQL (Zhong et al., 2017) as released, and its queries as text a language model can generate and we can read back.

The release (``data.tar.bz2`` of salesforce/WikiSQL, unpacked) holds per split ``<split>.jsonl``, one question a
line (``{"phase", "table_id", "question", "sql": {"sel", "agg", "conds": [[column, operator, value], ...]}}``), and
``<split>.tables.jsonl``, one table a line (``{"id", "header", "types", "rows", ...}``, types ``text`` or ``real``).
Indices refer to `AGG_OPS` and `COND_OPS`, the lists of the official ``lib/query.py``; condition values are
strings or numbers, and the official logical-form match compares ``str(value).lower()``, so a value's type is
part of the query (``1998.0`` is not ``"1998"`` there) and the text form below keeps it.

`sql_to_text` writes a query over the column names (the model sees the header, not ``col3``); `text_to_sql`
reads such text back, or gives None for text that cannot be scored (the metrics count it as wrong).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..metrics.wikisql import AGG_OPS, COND_OPS
from .base import TaskError, read_data

WIKISQL_FILES = {
    "train": ("train.jsonl", "train.tables.jsonl"),
    "dev": ("dev.jsonl", "dev.tables.jsonl"),
    "test": ("test.jsonl", "test.tables.jsonl"),
}
COLUMN_TYPES = ("text", "real")
_GET_DATA = "get data.tar.bz2 from salesforce/WikiSQL on GitHub (its release) and unpack its data/ files into"


@dataclass(frozen=True)
class WikiSQLExample:
    question: str
    table_id: str
    header: tuple[str, ...]  # column names, in column order (col0, col1, ... in the official .db)
    types: tuple[str, ...]  # "text" or "real", one per column
    rows: tuple[tuple, ...]  # cells as in the file: str, int or float
    sql: dict  # {"sel": int, "agg": int, "conds": [[column, operator, value], ...]}


# --- reading the released files -------------------------------------------------------------------------------


def read_wikisql(folder: str | Path, split: str) -> list[WikiSQLExample]:
    """The questions of one split with their tables, in file order; a bad file raises a one-line TaskError."""
    if split not in WIKISQL_FILES:
        raise TaskError(f"unknown WikiSQL split {split!r}; choose one of {', '.join(WIKISQL_FILES)}")
    folder = Path(folder)
    questions_file, tables_file = (folder / name for name in WIKISQL_FILES[split])
    for file in (questions_file, tables_file):  # both checked first: a missing file is named before any parsing
        if not file.is_file():
            raise TaskError(f"{file} not found (no such file); {_GET_DATA} {folder}")
    tables = dict(_table(tables_file, n, line) for n, line in _json_lines(tables_file))
    return [_example(questions_file, n, line, tables) for n, line in _json_lines(questions_file)]


def _json_lines(file: Path):
    """(line number, JSON object) for every non-blank line."""
    text = read_data(file, hint=f"{_GET_DATA} {file.parent}")
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as err:
            raise TaskError(f"{file}:{n} is not valid JSON ({err}); re-download the released file") from None
        _check(isinstance(item, dict), file, n, "not a JSON object")
        yield n, item


def _check(ok: bool, file: Path, n: int, what: str) -> None:
    if not ok:
        raise TaskError(f"{file}:{n} is malformed: {what}; re-download the released file")


def _table(file: Path, n: int, d: dict) -> tuple[str, tuple[tuple, tuple, tuple]]:
    header, types, rows = d.get("header"), d.get("types"), d.get("rows")
    _check(isinstance(d.get("id"), str), file, n, 'no table "id"')
    _check(isinstance(header, list) and all(isinstance(h, str) for h in header), file, n, '"header" is not names')
    _check(isinstance(types, list) and len(types) == len(header), file, n, '"types" does not match "header"')
    _check(all(t in COLUMN_TYPES for t in types), file, n, f'a type in "types" is not one of {COLUMN_TYPES}')
    _check(isinstance(rows, list) and all(isinstance(r, list) and len(r) == len(header) for r in rows), file, n,
           'a row of "rows" does not have one cell per column')  # fmt: skip
    return d["id"], (tuple(header), tuple(types), tuple(tuple(r) for r in rows))


def _example(file: Path, n: int, d: dict, tables: dict) -> WikiSQLExample:
    _check(isinstance(d.get("question"), str), file, n, 'no "question" text')
    _check(d.get("table_id") in tables, file, n, f"table {d.get('table_id')!r} is not in the tables file")
    header, types, rows = tables[d["table_id"]]
    sql = d.get("sql")
    _check(_valid_sql(sql, len(header)), file, n, '"sql" is not {sel, agg, conds} with valid indices and values')
    sql = {"sel": sql["sel"], "agg": sql["agg"], "conds": [list(c) for c in sql["conds"]]}
    return WikiSQLExample(d["question"], d["table_id"], header, types, rows, sql)


def _valid_sql(sql: dict, n_columns: int) -> bool:
    def index(x, n: int) -> bool:
        return type(x) is int and 0 <= x < n

    if not isinstance(sql, dict):
        return False
    conds = sql.get("conds")
    return (index(sql.get("sel"), n_columns) and index(sql.get("agg"), len(AGG_OPS)) and isinstance(conds, list)
            and all(isinstance(c, list) and len(c) == 3 and index(c[0], n_columns) and index(c[1], len(COND_OPS))
                    and _is_value(c[2]) for c in conds))  # fmt: skip


def _is_value(v) -> bool:
    return isinstance(v, str) or (type(v) in (int, float) and math.isfinite(v))


# --- queries as text ------------------------------------------------------------------------------------------


def sql_to_text(sql: dict, header: Sequence[str]) -> str:
    """The query as ``SELECT <sel> FROM table[ WHERE <cond>[ AND <cond>]...]`` over the column names.

    ``<sel>`` is ``"name"`` (agg 0) or ``AGG("name")``; ``<cond>`` is ``"name" OP value`` with OP one of
    `COND_OPS`. Column names and string values are in double quotes, a ``"`` inside written ``""`` (as SQL quotes
    identifiers), so names and values may hold spaces, AND or WHERE; int and float values are bare, an int in
    decimal digits and a float as Python's ``repr`` (always with ``.`` or an exponent), so the type survives.

    >>> header = ["Player", "Position", "Year", 'Say "hi" AND bye']
    >>> sql_to_text({"sel": 0, "agg": 3, "conds": [[1, 0, "Guard"], [2, 1, 1995]]}, header)
    'SELECT COUNT("Player") FROM table WHERE "Position" = "Guard" AND "Year" > 1995'
    >>> sql_to_text({"sel": 3, "agg": 0, "conds": [[2, 2, 1995.0], [3, 0, 'a "b" WHERE c']]}, header)
    'SELECT "Say ""hi"" AND bye" FROM table WHERE "Year" < 1995.0 AND "Say ""hi"" AND bye" = "a ""b"" WHERE c"'
    """
    if not _valid_sql(sql, len(header)):
        raise ValueError(f"not a WikiSQL query over {len(header)} columns: {sql!r}")
    agg, name = AGG_OPS[sql["agg"]], _quote(header[sql["sel"]])
    text = f"SELECT {agg}({name}) FROM table" if agg else f"SELECT {name} FROM table"
    conds = [f"{_quote(header[col])} {COND_OPS[op]} {_value_text(v)}" for col, op, v in sql["conds"]]
    return text + (" WHERE " + " AND ".join(conds) if conds else "")


def _quote(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _value_text(v) -> str:
    return _quote(v) if isinstance(v, str) else repr(v)  # repr(int) is its digits; repr(float) has "." or "e"


_QUOTED = r'"((?:[^"]|"")*)"'
_NUMBER = r"[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)(?:[eE][-+]?[0-9]+)?"
_AGGS = "|".join(a for a in AGG_OPS if a)
_SELECT = re.compile(rf"\s*SELECT\s+(?:({_AGGS})\s*\(\s*{_QUOTED}\s*\)|{_QUOTED})\s+FROM\s+table(?=\s|$)", re.I)
_COND = re.compile(rf"\s+(WHERE|AND)\s+{_QUOTED}\s*(=|>|<|OP(?=[\s\"]))\s*(?:{_QUOTED}|({_NUMBER})(?![\w.]))", re.I)
_END = re.compile(r"\s*")


def text_to_sql(text: str, header: Sequence[str]) -> dict | None:
    """The query `sql_to_text` wrote (keywords in any case, any spacing), or None when the text does not parse
    or names a column the header lacks.

    >>> header = ["Player", "Position", "Year"]
    >>> text_to_sql('SELECT COUNT("Player") FROM table WHERE "Position" = "Guard" AND "Year" > 1995', header)
    {'sel': 0, 'agg': 3, 'conds': [[1, 0, 'Guard'], [2, 1, 1995]]}
    >>> text_to_sql('SELECT "Team" FROM table', header) is None  # no such column
    True
    """
    head = _SELECT.match(text)
    if head is None:
        return None
    agg = AGG_OPS.index(head[1].upper()) if head[1] else 0
    sel = _column(head[2] if head[1] else head[3], header)
    conds, pos = [], head.end()
    while (m := _COND.match(text, pos)) and (m[1].upper() == "WHERE") == (not conds):
        conds.append([_column(m[2], header), COND_OPS.index(m[3].upper()), _value(m[4], m[5])])
        pos = m.end()
    if _END.fullmatch(text, pos) is None or sel is None or any(c[0] is None for c in conds):
        return None
    return {"sel": sel, "agg": agg, "conds": conds}


def _column(quoted: str, header: Sequence[str]) -> int | None:
    """The column a quoted name names: the exact name, else the first one equal to it without case or whitespace
    (how the official ``Query.from_sequence`` finds a column); None if there is none."""
    name = quoted.replace('""', '"')
    if name in header:
        return list(header).index(name)
    loose = [re.sub(r"\s+", "", h.lower()) for h in header]
    key = re.sub(r"\s+", "", name.lower())
    return loose.index(key) if key in loose else None


def _value(quoted: str | None, number: str | None) -> str | int | float:
    if quoted is not None:
        return quoted.replace('""', '"')
    return int(number) if re.fullmatch(r"[-+]?[0-9]+", number) else float(number)
