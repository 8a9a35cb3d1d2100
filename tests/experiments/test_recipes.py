"""The paper's recipe behind `model=M task=T` (experiments.cli.RECIPES), and weight decay as the released code
applies it (experiments.optimizers.param_groups)."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from experiments import optimizers
from experiments.cli import RECIPES, check_config, compose, hydra_context, recipe, with_recipe
from experiments.models import build
from experiments.paths import CONF_DIR

PRESETS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml") if not p.stem.startswith(("cpu_", "none")))
ONE_PER_TABLE = [("gpt2_medium", "e2e"), ("roberta_large", "sst2"), ("deberta_v2_xxlarge", "mnli"),
                 ("llama3_8b", "wikisql")]  # fmt: skip


def _settings(overrides: list[str]) -> dict:
    cfg = compose(overrides)
    return {group: OmegaConf.to_container(cfg[group]) for group in ("model", "method", "task", "trainer")}


def test_the_headline_command_trains_with_the_papers_recipe():
    """`model=gpt2_medium method=lora task=e2e` trained with torch's AdamW, clipping, dropout 0.1, lr 1e-3, r = 8:
    not Table 11, silently. Now it composes the same model, method, task and trainer as its preset."""
    with hydra_context():
        headlines = {pair: _settings([f"model={pair[0]}", "method=lora", f"task={pair[1]}"]) for pair in ONE_PER_TABLE}
        for (model, task), headline in headlines.items():
            assert headline == _settings([f"experiment={model}_{task}"]), (model, task)
    e2e = headlines["gpt2_medium", "e2e"]
    assert (e2e["trainer"]["optimizer"], e2e["trainer"]["max_grad_norm"], e2e["trainer"]["base_dropout"]) == (
        "adamw_released", 0.0, 0.0)  # fmt: skip
    assert (e2e["method"]["r"], e2e["method"]["alpha"], e2e["method"]["init"], e2e["trainer"]["lr"]) == (
        4,
        32,
        "kaiming_uniform",
        2e-4,
    )
    assert (e2e["trainer"]["weight_decay"], e2e["trainer"]["label_smoothing"]) == (0.01, 0.1)


def test_every_pair_of_the_table_has_a_preset_that_selects_that_pair_and_names_its_paper_table():
    """So that every `model=M method=lora task=T` composes what `experiment=M_T` does: group choices given on the
    command line win over a preset's, so a preset choosing any other model, method or task would differ."""
    assert sorted(f"{m}_{t}" for m, t in RECIPES) == PRESETS
    for (model, task), table in RECIPES.items():
        file = CONF_DIR / "experiment" / f"{model}_{task}.yaml"
        chosen = {k: v for entry in OmegaConf.load(file).defaults for k, v in entry.items()}
        assert {k: chosen[k] for k in ("override /model", "override /method", "override /task")} == {
            "override /model": model, "override /method": "lora", "override /task": task}  # fmt: skip
        assert table in file.read_text(), (file, table)  # the preset's header cites the table the code names


@pytest.mark.parametrize(
    "argv, preset, says",
    [
        (["model=gpt2_medium", "method=lora", "task=e2e"], "gpt2_medium_e2e", "paper's Table 11 recipe"),
        (["task=sst2", "model=roberta_base"], "roberta_base_sst2", "Table 9"),
        (["model=gpt2_large", "task=dart", "trainer.lr=1e-4"], "gpt2_large_dart", "experiment=none"),
        (["model=gpt2_medium", "task=e2e", "experiment=none"], None, ""),  # the opt-out
        (
            ["model=gpt2_medium", "task=e2e", "+experiment=gpt2_large_e2e"],
            None,
            "not for model=gpt2_medium task=e2e (experiment=gpt2_medium_e2e is for them)",
        ),  # the user's own preset
        (["+sweep=table4_smollm2_135m"], None, ""),  # a sweep sets its own trainer
        (["model=smollm2_135m", "task=wikisql", "+gpt3_row=lora_qv8"], None, ""),
        (["model=gpt2_medium", "method=full_ft", "task=e2e"], None, "no full_ft recipe"),  # said, not silent
        (["-m", "model=gpt2_medium", "task=e2e,webnlg"], None, "one model and task only"),
        (["model=tiny_gpt2", "task=e2e"], None, ""),  # not a pair the paper ran
        (
            ["model=gpt2_medium", "task=e2e", "trainer.lr=1e-3", "trainer.seed=1"],
            "gpt2_medium_e2e",
            "this command changes trainer.lr",
        ),  # the user's departures from the recipe are named; the seed is not one
        (
            ["experiment=roberta_base_mnli", "model=roberta_large"],
            None,
            "roberta_base, mnli; not for model=roberta_large task=mnli (experiment=roberta_large_mnli is for them)",
        ),
        (
            ["experiment=llama3_8b_wikisql", "method=adapter_h"],
            None,
            "not for method=adapter_h, which receives its LoRA options alpha, r, targets",  # r: the bottleneck
        ),
    ],
)
def test_the_recipe_is_composed_in_only_where_nothing_else_sets_the_trainer_and_always_said(argv, preset, says):
    chosen, note = recipe(argv)
    assert chosen == preset and (says in note if says else note == "")


def test_experiment_none_keeps_the_trainers_defaults():
    settings = _settings(["model=gpt2_medium", "task=e2e", "experiment=none"])
    assert (settings["trainer"]["lr"], settings["trainer"]["optimizer"], settings["method"]["r"]) == (1e-3, "adamw", 8)


def test_the_released_optimizer_decays_every_parameter_as_gpt2_ft_does():
    """gpt2_ft.py puts every parameter in one group with --weight_decay (its README passes no --no_decay_bias);
    full fine-tuning under `trainer.optimizer=adamw_released` exempted biases and LayerNorm weights."""
    model = build("tiny_gpt2", head="causal_lm")
    names = [n for n, p in model.named_parameters()]
    released = optimizers.param_groups(model, "adamw_released", 0.01)
    assert [g["weight_decay"] for g in released] == [0.01] and len(released[0]["params"]) == len(names)
    usual = optimizers.param_groups(model, "adamw", 0.01)  # torch's AdamW: the usual transformers recipe
    exempt = {id(p) for p in usual[1]["params"]}
    assert {n for n, p in model.named_parameters() if id(p) in exempt} == {
        n for n in names if n.endswith(".bias") or ".ln_" in n or n.startswith("transformer.ln_f")
    }
    bias = model.transformer.h[0].ln_1.bias
    with torch.no_grad():
        bias.fill_(1.0)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizers.build("adamw_released", released, lr=0.1).step()  # zero gradient: only the decay moves it
    assert torch.allclose(bias, torch.full_like(bias, 1.0 - 0.1 * 0.01))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["model=roberta_base", "method=ft_top2", "method.blocks=0"], "method.blocks=0 must be 1 to 12"),
        (["model=roberta_large", "method=adapter_d", "method.drop_lower=24"], "must leave at least one of the 24"),
        (["model=gpt2_medium", "method=prefix_layer", "method.l_i=1.5"], "method.l_i must be a whole number"),
    ],
)
def test_method_options_out_of_range_are_refused_from_the_config_before_any_weights_load(argv, message, tmp_path):
    with pytest.raises(SystemExit, match=message):
        check_config([*argv, f"trainer.output_dir={tmp_path}/run"])
    assert not (tmp_path / "run").exists()


def test_the_recipe_joins_the_overrides_where_hydras_command_line_reads_them():
    """Appended after `--cfg job` it was refused ("unrecognized arguments"): Hydra reads one run of overrides."""
    from hydra._internal.utils import get_args_parser

    for argv in (["model=gpt2_medium", "task=e2e", "--cfg", "job"], ["-m", "model=roberta_base", "trainer.seed=1,2"]):
        parsed = get_args_parser().parse_args(with_recipe(argv))
        assert parsed.overrides[0].startswith("experiment=") and parsed.overrides[1:] == [a for a in argv if "=" in a]
