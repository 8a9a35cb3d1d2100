"""WikiSQL: the reader on files in the released format, the query text round trip, and both metrics, checked by
hand and against verdicts of the official salesforce/WikiSQL evaluate.py (tests/golden/wikisql_official.json).

The golden file is remade, from the repository root, with a copy of salesforce/WikiSQL's evaluate.py and lib/ and
a Python that has the official code's dependencies (records 0.5.3 and SQLAlchemy 1.3, whose connections commit
each statement, as the 2017 code expects; babel, tqdm, tabulate):

    python tests/experiments/test_wikisql.py --wikisql /path/to/WikiSQL --python /path/to/venv/bin/python

It writes CASES in the released format, builds the official .db from the tables file with the official
``lib/table.py`` (``Table.create_table``), and runs evaluate.py unchanged on each case alone, with and without
``--ordered``, and on the whole file.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from experiments.metrics.wikisql import (
    execution_accuracy,
    execution_verdicts,
    logical_form_accuracy,
    logical_form_verdicts,
    wikisql_scores,
)
from experiments.tasks.base import TaskError
from experiments.tasks.wikisql_data import (
    WIKISQL_FILES,
    WikiSQLExample,
    read_wikisql,
    sql_to_text,
    text_to_sql,
)

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "wikisql_official.json"

# Tables as in the released *.tables.jsonl: cells as the release has them (ints in text columns, a text cell in a
# real column), mixed case, and a header holding quotes, AND and WHERE for the text round trip.
TABLES = [
    {"id": "1-10015132-11", "header": ["Player", "No.", "Nationality", "Position", "Years in Toronto",
                                       "School/Club Team"], "types": ["text"] * 6,
     "rows": [["Antonio Lang", 21, "United States", "Guard-Forward", "1999-2000", "Duke"],
              ["Voshon Lenard", 2, "United States", "Guard", "2002-03", "Minnesota"],
              ["Martin Lewis", 32, "United States", "Guard-Forward", "1996-97", "Butler CC (KS)"],
              ["Brad Lohaus", 33, "United States", "Forward-Center", "1996", "Iowa"],
              ["Art Long", 42, "United States", "Forward-Center", "2002-03", "Cincinnati"],
              ["Aleksandar Radojević", 25, "Serbia", "Center", "1999-2000", "Barton CC (KS)"]]},
    {"id": "2-1234567-1", "header": ["Year", "Team", "Wins", "Points per game", 'Notes AND "where"'],
     "types": ["real", "text", "real", "real", "text"],
     "rows": [[1995, "Chicago Bulls", 72, 27.5, "Record season"],
              [1996, "Chicago Bulls", 69, 29.6, "Repeat"],
              [1997, "Utah Jazz", 64, 27.0, "Finals"],
              [1998, "Utah Jazz", 62, 26.1, "n/a"],
              [1999, "San Antonio Spurs", 37, "n/a", "Lockout WHERE shortened"],
              [2000, "Los Angeles Lakers", 67, 28.7, "O'Neal MVP"]]},
    {"id": "1-555-2", "header": ["Rank", "Athlete", "Country", "Time (s)"], "types": ["real", "text", "text", "real"],
     "rows": [[1, "Usain BOLT", "Jamaica", 9.58], [2, "Tyson Gay", "United States", 9.69],
              [3, "Yohan Blake", "Jamaica", 9.69], [4, "Asafa Powell", "Jamaica", 9.72],
              [5, "Justin Gatlin", "United States", 9.74]]},
]  # fmt: skip


def q(sel, agg, *conds) -> dict:
    return {"sel": sel, "agg": agg, "conds": [list(c) for c in conds]}


# (table_id, question, gold, prediction or None for one that did not parse, what it checks)
T1, T2, T3 = (t["id"] for t in TABLES)
CASES = [
    (T1, "Who is the guard-forward of 1999-2000?", q(0, 0, [3, 0, "Guard-Forward"], [4, 0, "1999-2000"]),
     q(0, 0, [3, 0, "Guard-Forward"], [4, 0, "1999-2000"]), "identical"),
    (T1, "Which guard-forward played in 1999-2000?", q(0, 0, [3, 0, "Guard-Forward"], [4, 0, "1999-2000"]),
     q(0, 0, [4, 0, "1999-2000"], [3, 0, "Guard-Forward"]), "conditions reordered"),
    (T1, "Who is the guard?", q(0, 0, [3, 0, "Guard"]), q(0, 0, [3, 0, "GUARD"]), "value case"),
    (T1, "Who wore number 21?", q(0, 0, [1, 0, "21"]), q(0, 0, [1, 0, 21]), "int value on a text column"),
    (T1, "Who wore no. 21?", q(0, 0, [1, 0, "21"]), q(0, 0, [1, 0, 21.0]), "float value on a text column"),
    (T1, "Who wore number 33?", q(0, 0, [1, 0, "33"]), q(0, 0, [5, 0, "Iowa"]), "same row by another column"),
    (T1, "How many players are from the United States?", q(0, 3, [2, 0, "United States"]),
     q(3, 3, [2, 0, "united states"]), "COUNT of another column"),
    (T1, "How many centers are there?", q(0, 3, [3, 0, "Center"]), q(0, 0, [3, 0, "Center"]), "agg missing"),
    (T1, "Which center played?", q(0, 0, [3, 0, "Center"]), q(9, 0, [3, 0, "Center"]), "no such sel column"),
    (T1, "Name the center.", q(0, 0, [3, 0, "Center"]), q(0, 0, [9, 0, "Center"]), "no such condition column"),
    (T1, "Who went to Duke?", q(0, 0, [5, 0, "Duke"]), None, "prediction did not parse"),
    (T1, "Which player went to Duke?", q(0, 0, [5, 0, "Duke"]), q(0, 0, [5, 0, "Duke"], [2, 0, "United States"]),
     "extra condition, same rows"),
    (T1, "Who plays center?", q(0, 0, [3, 0, "Center"]), q(0, 0, [3, 0, "Center"], [3, 0, "center"]),
     "repeated condition"),
    (T1, "Which forward-center comes last by name?", q(0, 1, [3, 0, "Forward-Center"]), q(0, 0, [1, 0, "33"]),
     "MAX of text equals a plain select"),
    (T1, "Who is the center player?", q(0, 0, [3, 0, "Center"]), q(0, 0, [3, 3, "Center"]), "operator OP"),
    (T1, "Who is at center?", q(0, 0, [3, 0, "Center"]), q(0, 0, [3, 0, "Center "]), "trailing space"),
    (T1, "Who played in 2002-03?", q(0, 0, [4, 0, "2002-03"]), q(0, 0, [4, 0, "2002-03"], [2, 0, "United States"]),
     "two rows in order"),
    (T1, "Who wore a number above 40?", q(0, 0, [1, 1, "40"]), q(0, 0, [1, 1, 40]), "> on a text column"),
    (T2, "Which team played in 1998?", q(1, 0, [0, 0, 1998]), q(1, 0, [0, 0, "1998"]), "string number, real"),
    (T2, "What team was it in 1998?", q(1, 0, [0, 0, 1998]), q(1, 0, [0, 0, 1998.0]), "float for an int gold"),
    (T2, "Name the team of 1998.", q(1, 0, [0, 0, 1998]), q(1, 0, [0, 0, "1,998"]), "group separator"),
    (T2, "Team in the year 1998?", q(1, 0, [0, 0, 1998]), q(1, 0, [0, 0, "about 1998"]), "number inside text"),
    (T2, "Which team had n/a points?", q(1, 0, [0, 0, 1998]), q(1, 0, [0, 0, "n/a"]), "no number at all"),
    (T2, "How many wins did the Bulls have in total?", q(2, 4, [1, 0, "Chicago Bulls"]),
     q(2, 4, [1, 0, "chicago bulls"]), "SUM"),
    (T2, "Average points of the Jazz?", q(3, 5, [1, 0, "Utah Jazz"]), q(3, -1, [1, 0, "Utah Jazz"]),
     "agg -1 indexes AVG"),
    (T2, "How many teams between 1995 and 1999?", q(1, 3, [0, 1, 1995], [0, 2, 1999]), q(1, 3, [0, 1, 2005]),
     "two conditions on one column"),
    (T2, "Which teams scored more than 28 points per game?", q(1, 0, [3, 1, 28]), q(1, 0, [3, 1, "28.0"]),
     "text cell in a real column"),
    (T2, "When was the lockout where the season was shortened?", q(0, 0, [4, 0, "Lockout WHERE shortened"]),
     q(0, 0, [4, 0, "Lockout WHERE shortened"]), "WHERE inside a value"),
    (T2, "When was O'Neal MVP?", q(0, 0, [4, 0, "O'Neal MVP"]), q(0, 0, [4, 0, "o'neal mvp"]), "apostrophe"),
    (T2, "First year of the Jazz?", q(0, 2, [1, 0, "Utah Jazz"]), q(0, 1, [1, 0, "Utah Jazz"]), "MIN vs MAX"),
    (T2, "Which teams won more than 65?", q(1, 0, [2, 1, 65]), q(1, 0, [2, 2, 65]), "wrong operator"),
    (T2, "Total wins?", q(2, 4), q(2, 4), "no condition"),
    (T2, "Which year had 72 wins?", q(0, 0, [2, 0, 72]), q(0, 0, [2, 0, "7.2e1"]), "exponent"),
    (T3, "Which Jamaican ran 9.69?", q(1, 0, [2, 0, "Jamaica"], [3, 0, 9.69]),
     q(1, 0, [3, 0, "9.69"], [2, 0, "JAMAICA"]), "reordered, string number"),
    (T3, "How many ran 9.69?", q(1, 3, [3, 0, 9.69]), q(2, 3, [3, 0, 9.69]), "COUNT of another column"),
    (T3, "Who ranked 1?", q(1, 0, [0, 0, 1]), q(1, 0, [1, 0, "Usain Bolt"]), "same row via the answer"),
    (T3, "What was Usain Bolt's time?", q(3, 0, [1, 0, "Usain Bolt"]), q(3, 0, [1, 0, "usain bolt"]),
     "lower-cased cell"),
    (T3, "Which Jamaican athlete is listed?", q(1, 0, [2, 0, "Jamaica"]), q("1", 0, ["2", 0, "Jamaica"]),
     "indices as strings"),
    (T3, "Name an athlete.", q(1, 0, [0, 0, 2]), {"sel": 1, "agg": 0}, "no conds key"),
]  # fmt: skip


def write_official(folder: Path) -> None:
    """dev.jsonl, dev.tables.jsonl and dev.pred.jsonl (evaluate.py's prediction file) in the released format."""
    questions = [{"phase": 1, "table_id": t, "question": text, "sql": g} for t, text, g, _, _ in CASES]
    preds = [{"query": p} if p is not None else {"error": "did not parse"} for _, _, _, p, _ in CASES]
    for name, items in (("dev.jsonl", questions), ("dev.tables.jsonl", TABLES), ("dev.pred.jsonl", preds)):
        (folder / name).write_text("".join(json.dumps(x) + "\n" for x in items), encoding="utf-8")


def cases_digest() -> str:
    return hashlib.sha256(json.dumps([TABLES, CASES], sort_keys=True).encode()).hexdigest()


@pytest.fixture
def examples(tmp_path) -> list[WikiSQLExample]:
    write_official(tmp_path)
    return read_wikisql(tmp_path, "dev")


def golds() -> list[dict]:
    return [g for _, _, g, _, _ in CASES]


def preds() -> list[dict | None]:
    return [p for _, _, _, p, _ in CASES]


# --- against the official evaluate.py -------------------------------------------------------------------------


def test_verdicts_match_official_evaluate(examples):
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert golden["cases_sha256"] == cases_digest(), "CASES changed: remake the golden file (module docstring)"
    official = golden["verdicts"]
    assert [v["note"] for v in official] == [c[-1] for c in CASES]
    ours = zip(logical_form_verdicts(preds(), golds()), logical_form_verdicts(preds(), golds(), ordered=True),
               execution_verdicts(preds(), golds(), examples), strict=True)  # fmt: skip
    mismatches = [(c[-1], off, dict(zip(("lf", "lf_ordered", "ex"), mine, strict=True)))
                  for c, off, mine in zip(CASES, official, ours, strict=True)
                  if (off["lf"], off["lf_ordered"], off["ex"]) != mine]  # fmt: skip
    assert not mismatches
    assert wikisql_scores(preds(), golds(), examples) == golden["aggregate"]
    assert logical_form_accuracy(preds(), golds(), ordered=True) == golden["aggregate_ordered"]["lf_accuracy"]


def test_golden_covers_both_outcomes():
    """The official verdicts are not all alike, so agreeing with them says something."""
    verdicts = json.loads(GOLDEN.read_text(encoding="utf-8"))["verdicts"]
    for key in ("lf", "lf_ordered", "ex"):
        assert {v[key] for v in verdicts} == {True, False}
    assert any(v["ex"] and not v["lf"] for v in verdicts) and any(v["lf"] and not v["lf_ordered"] for v in verdicts)


# --- by hand --------------------------------------------------------------------------------------------------


def test_logical_form_by_hand():
    gold = q(0, 3, [1, 0, "Guard"], [2, 1, 1995])
    assert logical_form_accuracy([q(0, 3, [2, 1, 1995], [1, 0, "Guard"])], [gold]) == 1.0  # a set of conditions
    assert logical_form_accuracy([q(0, 3, [2, 1, 1995], [1, 0, "Guard"])], [gold], ordered=True) == 0.0
    assert logical_form_accuracy([q(0, 0, [1, 0, "Guard"], [2, 1, 1995])], [gold]) == 0.0  # other aggregation
    assert logical_form_accuracy([q(0, 3, [1, 0, "gUARD"], [2, 1, "1995"])], [gold]) == 1.0  # str(v).lower()
    assert logical_form_accuracy([q(0, 3, [1, 0, "Guard"], [2, 1, 1995.0])], [gold]) == 0.0  # "1995.0"
    assert logical_form_accuracy([None, gold], [gold, gold]) == 0.5


def test_execution_by_hand(examples):
    roster = examples[0]  # table 1-10015132-11
    gold = q(0, 0, [1, 0, "33"])  # Brad Lohaus, by number
    assert execution_accuracy([q(0, 0, [5, 0, "IOWA"])], [gold], [roster]) == 1.0  # by school, the same row
    assert execution_accuracy([q(0, 0, [5, 0, "Duke"])], [gold], [roster]) == 0.0
    assert execution_accuracy([q(0, 0, [9, 0, "Iowa"])], [gold], [roster]) == 0.0  # no such column
    assert execution_accuracy([q(0, 0, [5, 3, "Iowa"])], [gold], [roster]) == 0.0  # "OP" is no SQL operator
    assert execution_accuracy([text_to_sql('SELECT "School" FROM table', roster.header)], [gold], [roster]) == 0.0
    assert execution_accuracy([text_to_sql("SELECT Player FROM table", roster.header)], [gold], [roster]) == 0.0


def test_execution_of_real_columns(examples):
    seasons = next(e for e in examples if e.table_id == T2)
    gold = q(1, 0, [0, 0, 1998])  # Utah Jazz
    for value in (1998, 1998.0, "1998", "1,998", " 1998 ", "year 1998"):  # parse_decimal, then the first number
        assert execution_accuracy([q(1, 0, [0, 0, value])], [gold], [seasons]) == 1.0, value
    assert execution_accuracy([q(1, 0, [0, 0, "n/a"])], [gold], [seasons]) == 0.0  # no number: fails
    # Both conditions bind the value of the last one on their column: Year > 1999 AND Year < 1999, no rows.
    assert execution_accuracy([q(1, 3, [0, 0, 1234])], [q(1, 3, [0, 1, 1995], [0, 2, 1999])], [seasons]) == 1.0


def test_gold_that_does_not_run_is_an_error(examples):
    with pytest.raises(ValueError, match="gold query 0"):
        execution_accuracy([q(0, 0)], [q(9, 0)], examples[:1])


# --- the reader and the text form -----------------------------------------------------------------------------


def test_reader(examples):
    assert len(examples) == len(CASES)
    first = examples[0]
    assert first.question == CASES[0][1] and first.table_id == T1 and first.sql == CASES[0][2]
    assert first.header[1] == "No." and first.types == ("text",) * 6 and first.rows[0][1] == 21
    assert examples[18].rows[4][3] == "n/a" and examples[18].types[0] == "real"


def test_text_round_trip(examples):
    for example in examples:
        text = sql_to_text(example.sql, example.header)
        assert text_to_sql(text, example.header) == example.sql, text
    written = 0
    for example, pred in zip(examples, preds(), strict=True):
        try:
            text = sql_to_text(pred, example.header)
        except ValueError:  # None, or indices the table lacks: no text for those
            continue
        assert text_to_sql(text, example.header) == pred, text
        written += 1
    assert written == 33  # all but None, agg -1, string indices, no conds and columns 9


# Over the header ["Player", "Year", ...]: each is not the text form, or names a column the header lacks.
UNSCORABLE = ["", "SELECT Player FROM table", 'SELECT "Player" FROM table WHERE', 'SELECT "Player"',
              'SELECT "Player" FROM table AND "Year" = 1', 'SELECT "Player" FROM table WHERE "Year" = 19x5',
              'SELECT "Player" FROM table WHERE "Year" == 1', 'SELECT "Team" FROM table',
              'SELECT "Player" FROM table WHERE "Team" = "x"', 'SELECT "Player" FROM table WHERE "Year" = "1',
              'SELECT "Player" FROM table WHERE "Year" = 1 "Year" = 2', 'SELECT TOTAL("Player") FROM table',
              'SELECT "Player" FROM table WHERE "Year" = 1 AND', 'SELECT "Player" FROM tables',
              'SELECT "Player" FROM table WHERE "Year" = 1 WHERE "Year" = 2',
              'SELECT "Player" FROM table;']  # fmt: skip


def test_text_form():
    header = ["Player", "Year", 'Notes AND "where"']
    sql = q(0, 3, [2, 0, 'a "b" AND c'], [1, 1, 1995], [1, 2, 2000.5])
    text = sql_to_text(sql, header)
    assert text == ('SELECT COUNT("Player") FROM table WHERE "Notes AND ""where""" = "a ""b"" AND c" '
                    'AND "Year" > 1995 AND "Year" < 2000.5')  # fmt: skip
    assert text_to_sql(text, header) == sql
    assert text_to_sql('  select count ( "Player" )  from table  where "year"  >  1995 ', header) == q(
        0, 3, [1, 1, 1995]
    )
    for bad in UNSCORABLE:
        assert text_to_sql(bad, header) is None, bad
    with pytest.raises(ValueError):
        sql_to_text(q(5, 0), header)


def test_missing_file_is_one_line(tmp_path):
    write_official(tmp_path)
    (tmp_path / "dev.tables.jsonl").unlink()
    with pytest.raises(TaskError) as err:
        read_wikisql(tmp_path, "dev")
    message = str(err.value)
    assert "\n" not in message and "dev.tables.jsonl" in message
    assert "salesforce/WikiSQL" in message and "data.tar.bz2" in message and str(tmp_path) in message
    with pytest.raises(TaskError, match="test.jsonl"):
        read_wikisql(tmp_path, "test")
    assert set(WIKISQL_FILES) == {"train", "dev", "test"}


@pytest.mark.parametrize(
    "name, line, where",
    [("dev.jsonl", "{not json", "dev.jsonl:2 "), ("dev.jsonl", '{"question": "x", "table_id": "nope", "sql": {}}',
      "dev.jsonl:2 "), ("dev.tables.jsonl", '{"id": "x", "header": ["a"], "types": ["int"], "rows": []}',
      "dev.tables.jsonl:2 "), ("dev.jsonl", json.dumps({"question": "x", "table_id": T1, "sql": q(0, 9)}),
      "dev.jsonl:2 ")],
)  # fmt: skip
def test_malformed_line_is_one_line(tmp_path, name, line, where):
    write_official(tmp_path)
    file = tmp_path / name
    lines = file.read_text(encoding="utf-8").splitlines()
    file.write_text("\n".join([lines[0], line, *lines[1:]]) + "\n", encoding="utf-8")
    with pytest.raises(TaskError) as err:
        read_wikisql(tmp_path, "dev")
    assert where in str(err.value) and "\n" not in str(err.value)


# --- remaking the golden file ---------------------------------------------------------------------------------

BUILD_DB = """
import json, sys
import records
sys.path.insert(0, sys.argv[1])
from lib.table import Table
conn = records.Database("sqlite:///" + sys.argv[3]).get_connection()
for line in open(sys.argv[2], encoding="utf-8"):
    t = json.loads(line)
    Table(t["id"], t["header"], t["types"], t["rows"]).create_table(conn)
"""


def make_golden(wikisql: Path, python: str, commit: str, command: str) -> dict:
    import os
    import subprocess
    import tempfile

    env = {**os.environ, "LC_ALL": "en_US.UTF-8"}  # babel's parse_decimal reads the locale: en_US as WikiSQL's

    def evaluate(folder: Path, source: str, pred: str, ordered: bool) -> dict:
        cmd = [python, "evaluate.py", str(folder / source), str(folder / "dev.db"), str(folder / pred)]
        out = subprocess.run(cmd + ["--ordered"] * ordered, cwd=wikisql, env=env, capture_output=True, check=True)
        return json.loads(out.stdout)

    with tempfile.TemporaryDirectory(prefix="wikisql-golden-") as tmp:
        folder = Path(tmp)
        write_official(folder)
        build = [python, "-c", BUILD_DB, str(wikisql), str(folder / "dev.tables.jsonl"), str(folder / "dev.db")]
        subprocess.run(build, env=env, check=True)
        with sqlite3.connect(folder / "dev.db") as db:  # the official builder really wrote every row
            assert sum(db.execute(f"SELECT COUNT(*) FROM table_{t['id'].replace('-', '_')}").fetchone()[0]
                       for t in TABLES) == sum(len(t["rows"]) for t in TABLES)  # fmt: skip
        questions = (folder / "dev.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
        predictions = (folder / "dev.pred.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
        verdicts = []
        for case, question, prediction in zip(CASES, questions, predictions, strict=True):
            (folder / "one.jsonl").write_text(question, encoding="utf-8")
            (folder / "one.pred.jsonl").write_text(prediction, encoding="utf-8")
            plain, ordered = (evaluate(folder, "one.jsonl", "one.pred.jsonl", o) for o in (False, True))
            verdicts.append({"note": case[-1], "lf": plain["lf_accuracy"] == 1, "lf_ordered":
                             ordered["lf_accuracy"] == 1, "ex": plain["ex_accuracy"] == 1})  # fmt: skip
        aggregate = evaluate(folder, "dev.jsonl", "dev.pred.jsonl", False)
        aggregate_ordered = evaluate(folder, "dev.jsonl", "dev.pred.jsonl", True)
    versions = subprocess.run([python, "-c", "import importlib.metadata as m, sys; print(sys.version.split()[0], "
                               "*(m.version(p) for p in ('records', 'SQLAlchemy', 'babel')))"],
                              capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    return {
        "made_by": {"command": command, "wikisql_commit": commit, "locale": env["LC_ALL"],
                    "python": versions[0], "records": versions[1], "SQLAlchemy": versions[2], "babel": versions[3],
                    "how": "official lib/table.py Table.create_table builds dev.db; evaluate.py, unchanged, runs on "
                           "each case alone (with and without --ordered) and on the whole file"},
        "cases_sha256": cases_digest(),
        "aggregate": aggregate,
        "aggregate_ordered": aggregate_ordered,
        "verdicts": verdicts,
    }  # fmt: skip


def main() -> None:
    import argparse
    import shlex
    import subprocess
    import sys

    parser = argparse.ArgumentParser(description="Remake tests/golden/wikisql_official.json from the official code.")
    parser.add_argument("--wikisql", type=Path, required=True, help="folder with WikiSQL's evaluate.py and lib/")
    parser.add_argument("--python", required=True, help="a Python with records 0.5.3, SQLAlchemy 1.3, babel, ...")
    parser.add_argument("--commit", help="the WikiSQL commit of that folder (default: git rev-parse HEAD there)")
    args = parser.parse_args()
    commit = args.commit or subprocess.run(["git", "rev-parse", "HEAD"], cwd=args.wikisql, capture_output=True,
                                           text=True, check=True).stdout.strip()  # fmt: skip
    command = shlex.join(["python", "tests/experiments/test_wikisql.py", *sys.argv[1:]])
    golden = make_golden(args.wikisql.resolve(), args.python, commit, command)
    GOLDEN.write_text(json.dumps(golden, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {GOLDEN}: {golden['aggregate']}")


if __name__ == "__main__":
    main()
