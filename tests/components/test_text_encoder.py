"""T5Gemma text encoder wrapper: real-length hidden states, capped at 640 tokens."""

import torch

from magihuman.components import MAX_TEXT_TOKENS


def test_short_prompt_is_trimmed_to_its_real_length(tiny_components):
    encoder = tiny_components.text_encoder
    prompt = "A woman smiles and says hello."
    hidden = encoder.encode(prompt)
    assert hidden.shape == (1, encoder.num_tokens(prompt), encoder.hidden_size)
    assert hidden.dtype == torch.float32
    assert hidden.shape[1] < MAX_TEXT_TOKENS


def test_long_prompt_is_cut_to_640_tokens(tiny_components):
    encoder = tiny_components.text_encoder
    prompt = "talking " * 200
    assert encoder.num_tokens(prompt) > MAX_TEXT_TOKENS
    assert encoder.encode(prompt).shape == (1, MAX_TEXT_TOKENS, encoder.hidden_size)


def test_encoding_is_deterministic(tiny_components):
    encoder = tiny_components.text_encoder
    assert torch.equal(encoder.encode("same prompt"), encoder.encode("same prompt"))
