"""MFCCs exactly as SyncNet's protocol computes them (python_speech_features defaults).

Our own numpy implementation, not librosa's: the public SyncNet weights were trained on
``python_speech_features.mfcc`` output, which differs from ``librosa.feature.mfcc`` in
ways that change the numbers the network sees: a rectangular (not Hann) 25 ms window,
0.97 pre-emphasis, a 26-band HTK-mel filterbank with floor()-rounded FFT bins and no
area normalisation, natural log (not dB), cepstral liftering with L=22, and c0 replaced by
the log frame energy. Samples are on the int16 scale (the protocol reads a 16-bit wav
with scipy, so values go up to 32767), which shifts every log term.
Output: 13 coefficients at 100 Hz (10 ms hop) for 16 kHz audio.
"""

from __future__ import annotations

import numpy as np
from scipy.fft import dct

SAMPLE_RATE = 16000
WIN_LEN = 0.025
WIN_STEP = 0.010
NUM_CEP = 13
NUM_FILT = 26
NFFT = 512
PREEMPH = 0.97
CEP_LIFTER = 22


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(sample_rate: int = SAMPLE_RATE, nfilt: int = NUM_FILT, nfft: int = NFFT) -> np.ndarray:
    """``[nfilt, nfft//2 + 1]`` triangular filters on floor()-quantised FFT bins."""
    mels = np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), nfilt + 2)
    bins = np.floor((nfft + 1) * _mel_to_hz(mels) / sample_rate).astype(int)
    bank = np.zeros((nfilt, nfft // 2 + 1))
    for j in range(nfilt):
        lo, mid, hi = bins[j], bins[j + 1], bins[j + 2]
        for i in range(lo, mid):
            bank[j, i] = (i - lo) / (mid - lo)
        for i in range(mid, hi):
            bank[j, i] = (hi - i) / (hi - mid)
    return bank


def _frames(signal: np.ndarray, frame_len: int, step: int) -> np.ndarray:
    """Zero-padded overlapping frames; the count rounds up so the tail is kept."""
    n = len(signal)
    count = 1 if n <= frame_len else 1 + int(np.ceil((n - frame_len) / step))
    padded = np.concatenate([signal, np.zeros(max(0, (count - 1) * step + frame_len - n))])
    idx = np.arange(frame_len)[None, :] + step * np.arange(count)[:, None]
    return padded[idx]


def mfcc(samples_int16_scale: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """``[num_frames, 13]`` MFCCs of a mono signal given on the int16 scale."""
    x = np.asarray(samples_int16_scale, dtype=np.float64)
    x = np.append(x[0], x[1:] - PREEMPH * x[:-1])
    frames = _frames(x, int(round(WIN_LEN * sample_rate)), int(round(WIN_STEP * sample_rate)))
    power = np.abs(np.fft.rfft(frames, NFFT)) ** 2 / NFFT
    eps = np.finfo(float).eps
    energy = power.sum(axis=1)
    energy[energy == 0] = eps
    feat = power @ mel_filterbank(sample_rate).T
    feat[feat == 0] = eps
    cep = dct(np.log(feat), type=2, axis=1, norm="ortho")[:, :NUM_CEP]
    cep *= 1 + (CEP_LIFTER / 2.0) * np.sin(np.pi * np.arange(NUM_CEP) / CEP_LIFTER)
    cep[:, 0] = np.log(energy)
    return cep


def float_to_int16_scale(x: np.ndarray) -> np.ndarray:
    """[-1, 1] floats to what reading a pcm_s16le wav gives (rounded, clipped)."""
    return np.clip(np.round(np.asarray(x, np.float64) * 32768.0), -32768, 32767)
