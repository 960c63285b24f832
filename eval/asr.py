"""Speech intelligibility: Whisper transcription (user-supplied local model) and WER.

WER = (substitutions + deletions + insertions) / reference words, after lower-casing and
dropping punctuation (apostrophes inside words are kept), on a word-level Levenshtein
alignment. The ASR model is only ever read from a local directory saved with
``save_pretrained``; nothing is fetched from a hub.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import EvalInputError
from .io import Audio, require_model_dir, resample_audio

_PUNCT = re.compile(r"[^\w\s']|(?<!\w)'|'(?!\w)")


def normalize_words(text: str) -> list[str]:
    return _PUNCT.sub(" ", text.lower()).split()


@dataclass(frozen=True)
class WordErrors:
    wer: float
    substitutions: int
    deletions: int
    insertions: int
    reference_words: int


def word_errors(hypothesis: str, reference: str) -> WordErrors:
    """Minimum-edit word alignment of hypothesis against reference."""
    ref, hyp = normalize_words(reference), normalize_words(hypothesis)
    if not ref:
        raise EvalInputError("the reference transcript has no words; WER needs at least one")
    # cost[i][j] = (edits, subs, dels, ins) aligning ref[:i] with hyp[:j]
    prev = [(j, 0, 0, j) for j in range(len(hyp) + 1)]
    for i in range(1, len(ref) + 1):
        cur = [(i, 0, i, 0)]
        for j in range(1, len(hyp) + 1):
            same = ref[i - 1] == hyp[j - 1]
            d = prev[j - 1]
            options = [
                (d[0] + (not same), d[1] + (not same), d[2], d[3]),
                (prev[j][0] + 1, prev[j][1], prev[j][2] + 1, prev[j][3]),
                (cur[j - 1][0] + 1, cur[j - 1][1], cur[j - 1][2], cur[j - 1][3] + 1),
            ]
            cur.append(min(options))
        prev = cur
    edits, s, d, n_ins = prev[-1]
    return WordErrors(edits / len(ref), s, d, n_ins, len(ref))


def transcribe(audio: Audio, model_dir: str | Path, device: str = "cpu", max_new_tokens: int = 128) -> str:
    """Text of ``audio`` from a local Whisper (or any transformers ASR) checkpoint."""
    from transformers import pipeline

    p = require_model_dir(model_dir, "the ASR model")
    asr = pipeline("automatic-speech-recognition", model=str(p), device=device)
    rate = asr.feature_extractor.sampling_rate
    x = resample_audio(audio, rate).astype(np.float32)
    kwargs = {"chunk_length_s": 30} if len(x) > 30 * rate else {}
    limit = getattr(asr.model.config, "max_target_positions", None)  # decoder length incl. ~4 start tokens
    if limit:
        max_new_tokens = min(max_new_tokens, limit - 4)
    out = asr({"raw": x, "sampling_rate": rate}, generate_kwargs={"max_new_tokens": max_new_tokens}, **kwargs)
    return str(out["text"]).strip()


@dataclass(frozen=True)
class WERResult:
    wer: float
    transcript: str
    reference: str
    errors: WordErrors


def speech_wer(audio: Audio, reference_text: str, model_dir: str | Path, device: str = "cpu") -> WERResult:
    text = transcribe(audio, model_dir, device)
    errors = word_errors(text, reference_text)
    return WERResult(errors.wer, text, reference_text, errors)
