"""`hf-adapt compare`: variants built from one recipe (or given as NAME=PATH.yaml), each trained in
its own process, and one report with a row per variant."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import save_tiny_model, tiny_recipe, write_yaml
from safetensors.torch import load_file

from hf_adapt.cli import main
from hf_adapt.compare import build_variants, run_compare
from hf_adapt.config import PRESETS, load_recipe
from hf_adapt.errors import HfAdaptError

STS_PROBE = """sentence1,sentence2,score
the movie was good,the film was great,4.5
the plot was bad,the story was awful,4.0
a good film,a bad film,1.0
it was boring,it was superb,0.5
the movie,the film,4.8
happy story,sad story,1.2
very nice,quite lovely,4.1
the worst plot,the best plot,0.4
"""


@pytest.fixture
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A seed other than the recipes' train.seed (0): a seeded random init must not equal the "pretrained" one.
    return save_tiny_model(tmp_path_factory.mktemp("pretrained") / "bert", seed=7)


def write_recipe(path: Path, model: Path, data: dict[str, Path], **sections: dict) -> Path:
    return write_yaml(path, tiny_recipe(model, data, path.parent / "unused", **sections))


def test_variants_swap_the_strategy_and_keep_the_rest(pretrained, sentiment_csvs, tmp_path):
    recipe = write_recipe(tmp_path / "full.yaml", pretrained, sentiment_csvs)
    other = write_recipe(tmp_path / "other.yaml", pretrained, sentiment_csvs, optim={"layer_decay": 0.8})
    base, variants = build_variants(recipe, ["train.epochs=2"],
                                    ["features", "partial", "lora", "full", "scratch", f"ctl={other}"],
                                    tmp_path / "report")
    by_name = {v.name: v.config for v in variants}
    assert list(by_name) == ["features", "partial", "lora", "full", "scratch", "ctl"]
    assert all(c.train.epochs == 2 and c.train.seed == 0 and c.data == base.data for c in by_name.values())
    assert all(c.train.output_dir == str((tmp_path / "report" / n).resolve()) for n, c in by_name.items())
    features, partial, lora = by_name["features"], by_name["partial"], by_name["lora"]
    assert (features.adapt.strategy, features.adapt.freeze_encoder) == ("partial", True)
    assert features.optim.learning_rate == PRESETS["features"]["optim"]["learning_rate"] == 2e-3
    assert (partial.adapt.freeze_embeddings, partial.adapt.freeze_layers) == (True, 1)  # half of 2 layers
    assert (lora.adapt.strategy, lora.adapt.lora_r, lora.optim.learning_rate) == ("lora", 16, 1e-3)  # module defaults
    assert lora.model.dropout == 0.0 and by_name["full"].model.dropout is None
    assert by_name["full"].to_dict() | {"train": {}} == base.to_dict() | {"train": {}}
    scratch = by_name["scratch"]
    assert scratch.model.from_scratch and scratch.adapt.strategy == "full" and scratch.optim.learning_rate == 1e-3
    assert by_name["ctl"].optim.layer_decay == 0.8 and not base.model.from_scratch


def test_bad_variant_specs_are_named(pretrained, sentiment_csvs, tmp_path):
    recipe = write_recipe(tmp_path / "full.yaml", pretrained, sentiment_csvs)
    with pytest.raises(HfAdaptError, match="unknown variant 'adapters'"):
        build_variants(recipe, [], ["full", "adapters"], tmp_path / "report")
    with pytest.raises(HfAdaptError, match="'full' is repeated"):
        build_variants(recipe, [], ["full", f"full={recipe}"], tmp_path / "report")
    with pytest.raises(HfAdaptError, match="missing.yaml not found"):
        build_variants(recipe, [], [f"ctl={tmp_path / 'missing.yaml'}"], tmp_path / "report")


@pytest.mark.integration
def test_compare_writes_one_row_per_variant_with_memory_and_retention(pretrained, sentiment_csvs, tmp_path):
    recipe = write_recipe(tmp_path / "full.yaml", pretrained, sentiment_csvs, train={"eval_strategy": "no"})
    lora = write_recipe(tmp_path / "lora.yaml", pretrained, sentiment_csvs, adapt={"strategy": "lora"},
                        optim={"learning_rate": 5e-3}, train={"eval_strategy": "no"})
    probe = tmp_path / "sts.csv"
    probe.write_text(STS_PROBE, encoding="utf-8")
    report = tmp_path / "report"
    data = run_compare(recipe, ["full", f"adapter={lora}"], report, probe=str(probe))

    assert list(data["variants"]) == ["full", "adapter"]
    markdown = (report / "report.md").read_text()
    lines = markdown.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| variant | strategy | test acc"))
    assert [line.split(" | ")[0] for line in lines[header + 2:header + 5]] == ["| full", "| adapter", ""]
    assert "## Reading" in markdown and "**adapter** reached" in markdown
    assert json.loads((report / "report.json").read_text())["reference"] == "full"
    assert (report / "report.png").read_bytes()[:4] == b"\x89PNG"
    for name, row in data["variants"].items():
        assert row["process"]["peak_rss_mib"] > 50, name  # a real measurement of the child process
        assert row["forgetting"]["metric"] == "spearman" and row["forgetting"]["before"] is not None
        assert load_recipe(report / "variants" / f"{name}.yaml").to_dict() == load_recipe(
            report / name / "recipe.yaml").to_dict()
    assert data["variants"]["adapter"]["strategy"] == "lora"
    assert data["variants"]["adapter"]["params"]["trainable"] < data["variants"]["full"]["params"]["trainable"]


@pytest.mark.integration
def test_scratch_variant_starts_from_random_weights(pretrained, sentiment_csvs, tmp_path):
    from hf_adapt.recipes import full

    recipe = write_recipe(tmp_path / "full.yaml", pretrained, sentiment_csvs, train={"eval_strategy": "no"})
    _, variants = build_variants(recipe, [], ["full", "scratch"], tmp_path / "report")
    for variant in variants:
        full.run(variant.config)
    start = load_file(str(pretrained / "model.safetensors"))
    key = "bert.encoder.layer.0.attention.self.query.weight"
    moved = {v.name: float((load_file(str(Path(v.config.train.output_dir) / "model.safetensors"))[key]
                            - start[key]).abs().mean()) for v in variants}
    # Six AdamW steps at lr 1e-3 move a weight by ~6e-3 at most; a fresh N(0, 0.02) draw by ~0.02.
    assert moved["full"] < 0.006 < moved["scratch"]


def test_compare_cli_rejects_a_bad_override_before_training(pretrained, sentiment_csvs, tmp_path, capsys):
    recipe = write_recipe(tmp_path / "full.yaml", pretrained, sentiment_csvs)
    code = main(["compare", str(recipe), "model.max_length=0", "--strategies", "full", "--report",
                 str(tmp_path / "report")])
    assert code == 2
    assert "model.max_length must be in 1..1,000,000" in capsys.readouterr().err
    assert not (tmp_path / "report").exists()


def test_reuse_keeps_only_finished_runs_of_the_same_recipe(pretrained, sentiment_csvs, tmp_path):
    from hf_adapt.config import config_from_dict
    from hf_adapt.reports import finished_run, resume_if_interrupted

    run_dir = tmp_path / "run"
    config = config_from_dict(tiny_recipe(pretrained, sentiment_csvs, run_dir))
    assert finished_run(config, reuse=True) is None  # nothing there yet
    run_dir.mkdir()
    (run_dir / "recipe.yaml").write_text("# header\n" + config.to_yaml())
    (run_dir / "metrics.json").write_text('{"metrics": {}}')
    assert finished_run(config, reuse=True) == {"metrics": {}}
    assert finished_run(config, reuse=False) is None
    other = config_from_dict(tiny_recipe(pretrained, sentiment_csvs, run_dir, optim={"learning_rate": 2e-3}))
    with pytest.raises(HfAdaptError, match="holds a run of a different recipe"):
        finished_run(other, reuse=True)

    # An interrupted run resumes from its last complete checkpoint, and only then.
    assert not resume_if_interrupted(config, reuse=True).train.resume
    (tmp_path / ".run.work" / "checkpoint-4").mkdir(parents=True)
    assert not resume_if_interrupted(config, reuse=True).train.resume  # written halfway: no trainer_state.json
    (tmp_path / ".run.work" / "checkpoint-4" / "trainer_state.json").write_text("{}")
    assert resume_if_interrupted(config, reuse=True).train.resume
    assert not resume_if_interrupted(config, reuse=False).train.resume
