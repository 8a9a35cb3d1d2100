"""What the docs print that the code or a committed result file already knows, read at build time.

mkdocs-macros calls `define_env`; each macro returns markdown. A page writes `{{ trainer_settings() }}` instead of
a hand-typed table, so a renamed setting, a new config file or a re-run result changes the page with it, and a
macro that cannot find what it reads fails the (strict) build instead of printing a stale number.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


class DocsError(RuntimeError):
    pass


def _header(file: Path) -> str:
    """A config file's first comment sentence (its header), or ''."""
    lines = []
    for line in file.read_text().splitlines():
        if not line.startswith("#"):
            break
        if not line.startswith("# @package"):
            lines.append(line.lstrip("# ").rstrip())
    text = " ".join(lines)
    return _cell(re.split(r"(?<=\.)\s", text, maxsplit=1)[0]) if text else ""


def _cell(text: str) -> str:
    """Text fit for one markdown table cell."""
    return text.replace("|", "\\|")


def _names(group: str) -> list[str]:
    files = sorted((CONF / group).glob("*.yaml"))
    if not files:
        raise DocsError(f"conf/{group}/ has no config files")
    return [f.stem for f in files]


def _model_row(name: str) -> str:
    cfg = yaml.safe_load((CONF / "model" / f"{name}.yaml").read_text())
    arch = cfg.get("arch") or {}
    family = arch.get("model_type", "?")
    width = arch.get("hidden_size") or arch.get("n_embd")
    depth = arch.get("num_hidden_layers") or arch.get("n_layer")
    if cfg.get("random"):
        weights = "random, built from config (tests)"
    elif cfg.get("local"):
        weights = f"offline: the `{cfg['local'].replace('_', '-')}` package (hub: `{cfg['hub']}`)"
    elif cfg.get("hub"):
        weights = f"hub: `{cfg['hub']}` (or `model.hub=/local/folder`)"
    else:
        weights = "none: meta device only (counts, memory)"
    shape = f"{depth} x {width}" if width and depth else ""
    return f"| `{name}` | {family} | {shape} | {weights} |"


def _fields(file: str, cls: str) -> dict[str, tuple[str, str]]:
    """A dataclass's fields as written: name -> (default, the comment on its line)."""
    source = (ROOT / file).read_text()
    lines = source.splitlines()
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            fields = {}
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    line = lines[item.lineno - 1]
                    comment = line.split("#", 1)[1].strip() if "#" in line else ""
                    fields[item.target.id] = (ast.unparse(item.value) if item.value else "", comment)
            return fields
    raise DocsError(f"{file} has no class {cls}")


def _dig(data, keys):
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            raise DocsError(f"no {'.'.join(keys)} in the result file")
        data = data[key]
    return data


def define_env(env):
    @env.macro
    def count(what: str) -> int:
        """How many configs of a group (`experiment`, `model`, ...), methods, or test functions there are."""
        if what == "methods":
            return len(_names("method"))
        if what == "test functions":
            return sum(
                len(re.findall(r"^\s*(?:async )?def test_", f.read_text(), re.M))
                for f in (ROOT / "tests").rglob("test_*.py")
            )
        return len(_names(what))

    @env.macro
    def config_groups() -> str:
        rows = ["| group | files | options |", "|---|---:|---|"]
        for group in sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name != "hydra"):
            names = _names(group)
            rows.append(f"| `{group}` | {len(names)} | {', '.join(f'`{n}`' for n in names)} |")
        return "\n".join(rows)

    @env.macro
    def config_options(group: str) -> str:
        rows = ["| option | what it is (the file's header) |", "|---|---|"]
        rows += [f"| `{group}={n}` | {_header(CONF / group / f'{n}.yaml')} |" for n in _names(group)]
        return "\n".join(rows)

    @env.macro
    def models() -> str:
        rows = ["| `model=` | family | layers x width | weights |", "|---|---|---|---|"]
        return "\n".join(rows + [_model_row(n) for n in _names("model")])

    @env.macro
    def trainer_settings() -> str:
        from experiments.config import RANGES

        rows = ["| `trainer.` | default | allowed | what |", "|---|---|---|---|"]
        for name, (default, comment) in _fields("experiments/config.py", "TrainerConfig").items():
            allowed = RANGES[name][0] if name in RANGES else ""
            rows.append(f"| `{name}` | `{default}` | {_cell(allowed)} | {_cell(comment)} |")
        return "\n".join(rows)

    @env.macro
    def weight_types() -> str:
        from lora import WEIGHT_TYPES

        return ", ".join(WEIGHT_TYPES)

    @env.macro
    def families() -> str:
        """`lora.FAMILIES`: each transformers model type and the weight types its table maps (the paper's names)."""
        from lora import FAMILIES

        def path(p):
            return p if isinstance(p, str) else f"{p.path}[slice {p.index + 1} of {p.count}]"

        rows = ["| `model_type` | family | weight type: module in a block |", "|---|---|---|"]
        for model_type, fam in FAMILIES.items():
            cells = "; ".join(f"{t}: `{', '.join(path(p) for p in ps)}`" for t, ps in fam.weights.items())
            rows.append(f"| `{model_type}` | {fam.name} | {_cell(cells)} |")
        return "\n".join(rows)

    @env.macro
    def lora_config() -> str:
        """`lora.LoRAConfig`'s fields, defaults and comments, as `lora/config.py` has them."""
        rows = ["| field | default | what |", "|---|---|---|"]
        for name, (default, comment) in _fields("lora/config.py", "LoRAConfig").items():
            rows.append(f"| `{name}` | `{default}` | {_cell(comment)} |")
        return "\n".join(rows)

    @env.macro
    def methods() -> str:
        """Every method of the registry: its config file's header, its options with defaults, where it applies."""
        from baselines.registry import ALL, METHODS

        if sorted(METHODS) != _names("method"):
            raise DocsError(f"baselines/registry.py and conf/method/ disagree: {sorted(METHODS)} vs {_names('method')}")
        rows = ["| `method=` | what it is | options (`method.KEY`, default) | applies to |", "|---|---|---|---|"]
        for name, method in METHODS.items():
            file = CONF / "method" / f"{name}.yaml"
            options = {k: v for k, v in (yaml.safe_load(file.read_text()) or {}).items() if k != "name"}
            listed = ", ".join(f"`{k}={json.dumps(v)}`" for k, v in options.items())
            where = "all families" if method.families == ALL else ", ".join(method.families)
            rows.append(f"| `{name}` | {_header(file)} | {_cell(listed)} | {where} |")
        return "\n".join(rows)

    @env.macro
    def result(file: str, *keys: str, digits: int = 3) -> str:
        """A number from a committed result file: `result("experiments/results/x.json", "best", "dev/accuracy")`."""
        value = _dig(json.loads((ROOT / file).read_text()), keys)
        return f"{value:.{digits}f}" if isinstance(value, float) else f"{value:,}"

    @env.macro
    def job_benchmark(file: str = "benchmarks/results/job-fp32.json") -> str:
        """benchmarks.job's committed result as the benchmark prints it: the table, the ratios, the accuracies."""
        import sys

        if str(ROOT) not in sys.path:  # benchmarks/ is run from the repository root, not installed as a package
            sys.path.insert(0, str(ROOT))
        from benchmarks.job import report

        payload = json.loads((ROOT / file).read_text())
        return report(payload).replace("\nspeed-up", "\n\nSpeed-up").replace("\nlargest", "\n\nLargest")

    @env.macro
    def ab_benchmark(file: str) -> str:
        """benchmarks.ab's committed result as the benchmark prints it: the table and the ratios, round by round."""
        import sys

        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        from benchmarks.ab import report

        return report(json.loads((ROOT / file).read_text())).replace("\nA's wall", "\n\nA's wall")

    @env.macro
    def table6_by(file: str, key: str) -> str:
        """Table 6 of a committed runs.csv once per value of the config `key` (`method.init`): one table each,
        where the tables would show the best of them per cell and list the other under it."""
        from analysis import tables

        rows = tables.rows_from_csv(ROOT / file)
        values = sorted({json.dumps(r["_config"].get(key)) for r in rows})
        parts = []
        for value in values:
            subset = [r for r in rows if json.dumps(r["_config"].get(key)) == value]
            parts.append(f"`{key}={json.loads(value)}` ({len(subset)} runs):\n\n"
                         + tables.table6_markdown(tables.table6(subset)))  # fmt: skip
        return "\n\n".join(parts)

    @env.macro
    def evals(file: str, metric: str, digits: int = 3) -> str:
        """Every evaluation of a committed run, in order: `0.807, 0.820, ...`."""
        runs = json.loads((ROOT / file).read_text())["evals"]
        return ", ".join(f"{e[metric]:.{digits}f}" for e in runs)

    @env.macro
    def include(file: str, drop_title: bool = True) -> str:
        """A committed markdown result (e.g. an analysis `tables.md`), its own top heading left out."""
        text = (ROOT / file).read_text()
        if drop_title:
            text = re.sub(r"\A# .*\n", "", text)
        return re.sub(r"^(#+) ", r"\1## ", text, flags=re.M)  # its headings under the page's

    @env.macro
    def paper_table(name: str) -> str:
        """One of the paper's GPT-3 tables as `analysis.paper` holds it (the numbers our tables print beside ours)."""
        from analysis import paper

        if name == "table2":
            tasks = list(next(iter(paper.TABLE2_ROBERTA_BASE.values())))
            rows = ["| RoBERTa-base | " + " | ".join(tasks) + " |", "|---|" + "---:|" * len(tasks)]
            rows += [
                f"| `{m}` | " + " | ".join(str(s[t]) for t in tasks) + " |"
                for m, s in paper.TABLE2_ROBERTA_BASE.items()
            ]
            return "\n".join(rows)
        if name == "table16":
            sizes = ["all" if n is None else f"{n:,}" for n in paper.TABLE16_SIZES]
            rows = ["| method | " + " | ".join(sizes) + " |", "|---|" + "---:|" * len(sizes)]
            rows += [f"| `{m}` | " + " | ".join(map(str, s)) + " |" for m, s in paper.TABLE16.items()]
            return "\n".join(rows)
        table = {"table4": paper.TABLE4, "table15": paper.TABLE15}[name]
        tasks = list(table[0].scores)
        rows = [
            "| row | GPT-3 params | our settings | " + " | ".join(tasks) + " |",
            "|---|---:|---|" + "---:|" * len(tasks),
        ]
        for row in table:
            cells = [" / ".join(map(str, v)) if isinstance(v, tuple) else str(v) for v in row.scores.values()]
            settings = "; ".join(f"`{s}`" for s in row.settings)
            rows.append(f"| {row.method} | {row.gpt3_params} | {settings} | " + " | ".join(cells) + " |")
        return "\n".join(rows)

    @env.macro
    def run_folder() -> str:
        """The run folder's files, from `experiments/runs.py`'s docstring (the module that writes them)."""
        doc = ast.get_docstring(ast.parse((ROOT / "experiments" / "runs.py").read_text())) or ""
        listing = [line for line in doc.splitlines() if line.startswith("    ")]
        if not listing:
            raise DocsError("experiments/runs.py's docstring no longer lists the run folder's files")
        return "```\n" + "\n".join(line[4:] for line in listing) + "\n```"

    @env.macro
    def test_files() -> str:
        """The test files and how many test functions each holds."""
        rows = ["| file | test functions |", "|---|---:|"]
        for file in sorted((ROOT / "tests").rglob("test_*.py")):
            n = len(re.findall(r"^\s*def test_", file.read_text(), re.M))
            rows.append(f"| `{file.relative_to(ROOT)}` | {n} |")
        return "\n".join(rows)

    @env.macro
    def golden_files() -> str:
        """The golden files made by running an oracle, with the command and the oracle's commit each records."""
        rows = ["| file | what it holds | made by |", "|---|---|---|"]
        for file in sorted((ROOT / "tests" / "golden").glob("*.json")):
            data = json.loads(file.read_text())
            made = data["made_by"]
            commit = made.get("released_commit") or made.get("wikisql_commit", "")
            what = _cell(re.split(r"(?<=\.)\s|:", data.get("description", "") or "official verdicts", maxsplit=1)[0])
            rows.append(f"| `{file.name}` | {what} | `{_cell(made['command'])}` @ {commit[:7]} |")
        return "\n".join(rows)

    @env.macro
    def verdicts(*folders: str) -> str:
        """Section 7's verdicts side by side, one column per committed findings.json (`analysis.section7`'s rule)."""
        found = [json.loads((ROOT / f / "findings.json").read_text()) for f in folders]

        def claims(data):
            out = {}
            for name, part in data.items():
                if isinstance(part, dict) and "verdicts" in part:
                    prefix = "" if name == "subspace" else f"{name}: "
                    out.update({prefix + claim: v for claim, v in part["verdicts"].items()})
            return out

        tables = [claims(d) for d in found]
        heads = " | ".join(f"`{Path(f).name}`" for f in folders)
        rows = [f"| claim | {heads} |", "|---|" + "---|" * len(folders)]
        for claim in tables[0]:
            cells = []
            for table in tables:
                v = table.get(claim)
                cells.append(
                    ""
                    if v is None
                    else f"{v['verdict']} ({v['median']:.3g} against {v['than']:.3g}; gap needed {v['needed']:.3g})"
                )
            rows.append(f"| {_cell(claim)} | " + " | ".join(cells) + " |")
        return "\n".join(rows)
