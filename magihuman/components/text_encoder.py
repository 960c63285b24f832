"""T5Gemma text encoder: transformers ``T5GemmaEncoderModel`` + the checkpoint's own tokenizer.

Checkpoint layout: ``google/t5gemma-9b-9b-ul2`` (a full encoder-decoder save; only the encoder
weights are used, 3584-dim hidden states).

The reference encodes the whole prompt and then keeps the first 640 hidden states; we cut the
tokens to 640 before encoding, so a 100k-character prompt costs what a 640-token one does (for
prompts over 640 tokens the kept states then differ slightly, the encoder being bidirectional).
Prompts of at most 640 tokens are encoded exactly as in the reference. The reference stores
the embeddings in fp16 before casting them to fp32; we round through fp16 the same way.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
import transformers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, T5GemmaEncoderModel

MAX_TEXT_TOKENS = 640


@contextlib.contextmanager
def _quiet_transformers():
    """Silence the load report listing the (intentionally unused) decoder weights."""
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(verbosity)


class T5GemmaTextEncoder:
    """Prompt -> text hidden states ``[1, n, C]`` float32 with ``n <= 640``."""

    def __init__(
        self, model: T5GemmaEncoderModel, tokenizer: PreTrainedTokenizerBase, max_tokens: int = MAX_TEXT_TOKENS
    ):
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens

    @classmethod
    def from_pretrained(
        cls, path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> T5GemmaTextEncoder:
        """Load the encoder half and tokenizer of a T5Gemma checkpoint directory."""
        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"no T5Gemma checkpoint in {path}: expected config.json (t5gemma-9b-9b-ul2)")
        tokenizer = AutoTokenizer.from_pretrained(path)
        with _quiet_transformers():
            model = T5GemmaEncoderModel.from_pretrained(path, is_encoder_decoder=False, dtype=dtype)
        return cls(model.to(device), tokenizer)

    @property
    def hidden_size(self) -> int:
        return self.model.config.encoder.hidden_size

    @property
    def device(self) -> torch.device:
        return self.model.device

    def num_tokens(self, prompt: str) -> int:
        """Tokens the tokenizer produces for ``prompt`` (special tokens included, before the 640 cap)."""
        return len(self.tokenizer(prompt)["input_ids"])

    @torch.inference_mode()
    def encode(self, prompt: str) -> torch.Tensor:
        """Hidden states ``[1, min(n_tokens, 640), C]`` float32 for one prompt."""
        inputs = self.tokenizer([prompt], return_tensors="pt", truncation=True, max_length=self.max_tokens)
        hidden = self.model(**inputs.to(self.device)).last_hidden_state
        return hidden.to(torch.float16).to(torch.float32)
