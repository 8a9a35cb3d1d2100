"""Logical-form and execution accuracy on WikiSQL, as the official ``evaluate.py`` of salesforce/WikiSQL reports
them (the LoRA paper's Table 4 gives both), with the official semantics and no dependency beyond ``sqlite3``.

Logical form (``lib/query.py``, ``Query.__eq__``): same ``sel``, same ``agg``, and the conditions equal as a set
of ``(column, operator, str(value).lower())`` (as a list with ``ordered=True``, evaluate.py's ``--ordered``). So
the value's case does not count, its type may (``"1998"`` matches ``1998`` but not ``1998.0``), and a repeated
condition does not.

Execution (``lib/dbengine.py``, ``DBEngine.execute`` with ``lower=True``): each query becomes
``SELECT agg(colS) AS result FROM table WHERE colC op :colC AND ...`` on the example's table, stored as the
official ``.db`` files store it (``lib/table.py``, ``Table.create_table``): columns ``col0..colN`` typed ``text`` or
``real``, every string cell lower-cased, rows in file order. (The released .db must hold lower-cased cells: its
``test/check.py`` requires every gold query, values lower-cased, to return rows.) A string condition value is
lower-cased; on a ``real`` column a value that is not a number becomes one as babel's ``parse_decimal`` does in an
en_US locale (``,`` dropped, then ``Decimal``), else as the first number in it (``[-+]?\\d*\\.\\d+|\\d+``), else
the query fails. Conditions bind their value by column name, so two conditions on one column both use the last
one's value, as there. Results are compared as lists in row order; a query that fails to run (no such column, an
operator "OP", ...) is wrong. The gold query must run.

A prediction is a query dict or None (text that did not parse, see `experiments.tasks.wikisql_data.text_to_sql`);
None is wrong under both metrics.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Protocol


class WikiSQLExample(Protocol):
    """What scoring needs of an example: its table (`experiments.tasks.wikisql_data.WikiSQLExample` reads it)."""

    table_id: str
    header: Sequence[str]
    types: Sequence[str]
    rows: Sequence[Sequence]


AGG_OPS = ("", "MAX", "MIN", "COUNT", "SUM", "AVG")  # Query.agg_ops of lib/query.py, index = "agg"
COND_OPS = ("=", ">", "<", "OP")  # Query.cond_ops; "OP" is listed there but no released query uses it

_NUMBER = re.compile(r"[-+]?\d*\.\d+|\d+")  # dbengine.py's fallback for a value parse_decimal refuses


# --- logical form ---------------------------------------------------------------------------------------------


def logical_form_match(predicted: dict | None, gold: dict, ordered: bool = False) -> bool:
    """Whether the official ``Query.__eq__`` holds; a prediction it cannot even read is wrong.

    >>> gold = {"sel": 0, "agg": 0, "conds": [[1, 0, "Guard"], [2, 1, 1995]]}
    >>> logical_form_match({"sel": 0, "agg": 0, "conds": [[2, 1, "1995"], [1, 0, "GUARD"]]}, gold)
    True
    >>> logical_form_match({"sel": 0, "agg": 0, "conds": [[2, 1, "1995"], [1, 0, "GUARD"]]}, gold, ordered=True)
    False
    """
    try:
        return _lf_key(predicted, ordered) == _lf_key(gold, ordered)
    except (KeyError, TypeError, ValueError):  # None, a missing key, a condition that is not a triple
        return False


def _lf_key(sql: dict, ordered: bool):
    conds = [(col, op, str(value).lower()) for col, op, value in sql["conds"]]
    return sql["sel"], sql["agg"], conds if ordered else set(conds)


def logical_form_verdicts(predicted: Sequence[dict | None], gold: Sequence[dict], ordered: bool = False) -> list[bool]:
    _same_length(predicted, gold)
    return [logical_form_match(p, g, ordered) for p, g in zip(predicted, gold, strict=True)]


def logical_form_accuracy(predicted: Sequence[dict | None], gold: Sequence[dict], ordered: bool = False) -> float:
    """The fraction of predictions equal to their gold query as official logical forms."""
    return _mean(logical_form_verdicts(predicted, gold, ordered))


# --- execution ------------------------------------------------------------------------------------------------


class _Tables:
    """An in-memory sqlite database holding each table once, laid out as in the official .db files."""

    def __init__(self):
        self.conn = sqlite3.connect(":memory:")
        self.types: dict[str, dict[str, str]] = {}  # table name -> {"col0": "text", ...}

    def name(self, example: WikiSQLExample) -> str:
        name = "table_" + example.table_id.replace("-", "_")  # the official table name (any name would do)
        if name not in self.types:
            self.types[name] = {f"col{i}": t for i, t in enumerate(example.types)}
            columns = ", ".join(f"col{i} {t}" for i, t in enumerate(example.types))
            self.conn.execute(f'CREATE TABLE "{name}" ({columns})')
            cells = ",".join("?" * len(example.types))
            rows = [[c.lower() if isinstance(c, str) else c for c in row] for row in example.rows]
            self.conn.executemany(f'INSERT INTO "{name}" VALUES ({cells})', rows)
        return name

    def execute(self, example: WikiSQLExample, sql: dict) -> list:
        """The official result list of `sql` on the example's table; any failure raises."""
        name = self.name(example)
        select = f"col{sql['sel']}"
        agg = AGG_OPS[sql["agg"]]  # Python indexing, as there (-1 is AVG)
        where, values = [], {}
        for col, op, value in sql["conds"]:
            key = f"col{col}"
            value = value.lower() if isinstance(value, str) else value
            if self.types[name][key] == "real" and not isinstance(value, (int, float)):
                value = official_number(value)
            where.append(f"{key} {COND_OPS[op]} :{key}")
            values[key] = value  # keyed by column: a later condition on the same column overrides the value
        query = f'SELECT {f"{agg}({select})" if agg else select} AS result FROM "{name}"'
        query += " WHERE " + " AND ".join(where) if where else ""
        return [row[0] for row in self.conn.execute(query, values)]


def official_number(text: str) -> float:
    """A condition value on a ``real`` column as dbengine.py makes it a number (babel's en_US ``parse_decimal``,
    else the first number in the text); raises when there is none.

    >>> official_number("1,234.5"), official_number("about 12 wins"), official_number(" 7 ")
    (1234.5, 12.0, 7.0)
    """
    try:
        return float(Decimal(text.replace(",", "")))  # parse_decimal: drop the group symbol, "." stays decimal
    except InvalidOperation:
        return float(_NUMBER.findall(text)[0])


def execution_verdicts(
    predicted: Sequence[dict | None], gold: Sequence[dict], examples: Sequence[WikiSQLExample]
) -> list[bool]:
    _same_length(predicted, gold, examples)
    tables, verdicts = _Tables(), []
    for i, (p, g, example) in enumerate(zip(predicted, gold, examples, strict=True)):
        try:
            expected = tables.execute(example, g)
        except Exception as err:
            raise ValueError(f"gold query {i} ({g!r}) does not run on table {example.table_id}: {err}") from None
        verdicts.append(p is not None and _runs_to(tables, example, p, expected))
    tables.conn.close()
    return verdicts


def _runs_to(tables: _Tables, example: WikiSQLExample, sql: dict, expected: list) -> bool:
    try:
        return tables.execute(example, sql) == expected
    except Exception:  # evaluate.py: any exception of a predicted query makes it wrong
        return False


def execution_accuracy(
    predicted: Sequence[dict | None], gold: Sequence[dict], examples: Sequence[WikiSQLExample]
) -> float:
    """The fraction of predictions whose result on the example's table equals the gold query's."""
    return _mean(execution_verdicts(predicted, gold, examples))


def wikisql_scores(
    predicted: Sequence[dict | None], gold: Sequence[dict], examples: Sequence[WikiSQLExample]
) -> dict[str, float]:
    """evaluate.py's two numbers (fractions), under its default unordered comparison of conditions."""
    return {
        "lf_accuracy": logical_form_accuracy(predicted, gold),
        "ex_accuracy": execution_accuracy(predicted, gold, examples),
    }


def _same_length(*lists: Sequence) -> None:
    if len({len(x) for x in lists}) != 1:
        raise ValueError(f"lists of different lengths: {[len(x) for x in lists]}")


def _mean(verdicts: list[bool]) -> float:
    if not verdicts:
        raise ValueError("no predictions to score")
    return sum(verdicts) / len(verdicts)
