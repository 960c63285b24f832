"""WER and CLIP alignment: known-answer WER, and model loading on tiny random checkpoints."""

from __future__ import annotations

import os

import numpy as np
import pytest

from magihuman.eval import EvalConfig, score
from magihuman.eval.asr import speech_wer, word_errors
from magihuman.eval.clip_align import clip_alignment
from magihuman.eval.errors import WeightsUnavailable

pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")


def test_wer_known_answers():
    assert word_errors("the cat sat on the mat", "The cat sat on the mat.").wer == 0.0
    e = word_errors("the cat sat", "the cat sat on")
    assert (e.wer, e.deletions) == (0.25, 1)
    e = word_errors("a dog sat on the mat today", "the cat sat on the mat")
    assert (e.substitutions, e.insertions, e.deletions) == (2, 1, 0)
    assert e.wer == pytest.approx(3 / 6)
    assert word_errors("don't stop", "don't, stop!").wer == 0.0


def _bpe_files(directory, corpus, **kwargs):
    from tokenizers import Tokenizer, models, trainers

    suffix = kwargs.pop("end_of_word_suffix", None)
    tok = Tokenizer(models.BPE(end_of_word_suffix=suffix) if suffix else models.BPE())
    tok.pre_tokenizer = kwargs.pop("pre_tokenizer")
    trainer = trainers.BpeTrainer(vocab_size=120, **({"end_of_word_suffix": suffix} if suffix else {}), **kwargs)
    tok.train_from_iterator(corpus * 5, trainer)
    tok.model.save(str(directory))
    return os.path.join(directory, "vocab.json"), os.path.join(directory, "merges.txt")


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory) -> str:
    """A 1-layer random Whisper with a byte-level BPE tokenizer, saved like a real checkpoint."""
    from tokenizers import pre_tokenizers
    from transformers import (
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    d = tmp_path_factory.mktemp("tiny_whisper")
    vocab, merges = _bpe_files(d, ["hello world the cat sat on the mat"], pre_tokenizer=pre_tokenizers.ByteLevel(),
                               special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    eot = "<|endoftext|>"
    tok = WhisperTokenizer(vocab, merges, unk_token=eot, bos_token=eot, eos_token=eot, pad_token=eot)
    specials = ["<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"]
    tok.add_special_tokens({"additional_special_tokens": specials})
    cfg = WhisperConfig(vocab_size=len(tok), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=80,
                        max_target_positions=32, decoder_start_token_id=tok.convert_tokens_to_ids("<|startoftranscript|>"),
                        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id)
    WhisperForConditionalGeneration(cfg).save_pretrained(d)
    WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tok).save_pretrained(d)
    return str(d)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> str:
    """A 1-layer random CLIP (32 px images) with a word-piece BPE tokenizer."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    d = tmp_path_factory.mktemp("tiny_clip")
    vocab, merges = _bpe_files(d, ["a person talking to the camera", "a photo of a face"],
                               pre_tokenizer=pre_tokenizers.Whitespace(), end_of_word_suffix="</w>",
                               special_tokens=["<|startoftext|>", "<|endoftext|>"])
    tok = CLIPTokenizer(vocab, merges)
    text = dict(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=32, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
                pad_token_id=tok.pad_token_id)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=8)).save_pretrained(d)
    image_proc = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_proc, tokenizer=tok).save_pretrained(d)
    return str(d)


def test_whisper_loading_and_transcription(tiny_whisper, talking_clip):
    r = speech_wer(talking_clip.audio, "hello world", tiny_whisper)
    assert isinstance(r.transcript, str)
    assert r.wer >= 0.0 and np.isfinite(r.wer)
    assert r.errors.reference_words == 2


def test_clip_loading_and_score(tiny_clip, talking_clip):
    r = clip_alignment(talking_clip.video, "a person talking", tiny_clip, max_frames=4)
    assert r.num_frames == 4
    assert -1.0 <= r.mean_cosine <= 1.0
    assert 0.0 <= r.clip_score <= 100.0


def test_models_missing_are_unavailable(tmp_path, talking_clip):
    with pytest.raises(WeightsUnavailable, match="save_pretrained"):
        clip_alignment(talking_clip.video, "a face", tmp_path)
    cfg = EvalConfig(transcript="hello", prompt="a face")
    out = score(talking_clip.video, audio=talking_clip.audio, metrics=["wer", "clip"], config=cfg)["metrics"]
    assert out["wer"]["available"] is False and "ASR model" in out["wer"]["reason"]
    assert out["clip"]["available"] is False and "CLIP model" in out["clip"]["reason"]


def test_score_runs_model_metrics(tiny_whisper, tiny_clip, talking_clip):
    cfg = EvalConfig(whisper_dir=tiny_whisper, transcript="hello world", clip_dir=tiny_clip, prompt="a face")
    out = score(talking_clip.video, audio=talking_clip.audio, metrics=["wer", "clip"], config=cfg)["metrics"]
    assert out["wer"]["available"] and out["clip"]["available"]
