#!/usr/bin/python3
"""Independent numpy reference for src/audio/mel_spectrogram (Wav2Lip's melspectrogram).

Usage: mel_reference.py IN.f32 OUT.f32
IN: raw float32 little-endian mono samples at 16 kHz. OUT: float32 [80, T] row-major.
Written from the formula (docs/AUDIO.md), in float64, without librosa.
"""
import sys

import numpy as np

SR, N_FFT, HOP, N_MELS, FMIN, FMAX = 16000, 800, 200, 80, 55.0, 7600.0


def hz_to_mel(f):
    f = np.asarray(f, dtype=np.float64)
    sp = 200.0 / 3
    mel = f / sp
    log_region = f >= 1000.0
    mel = np.where(log_region, 1000.0 / sp + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0), mel)
    return mel


def mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    sp = 200.0 / 3
    hz = m * sp
    min_log_mel = 1000.0 / sp
    return np.where(m >= min_log_mel, 1000.0 * np.exp(np.log(6.4) / 27.0 * (m - min_log_mel)), hz)


def filterbank():
    bins = np.arange(N_FFT // 2 + 1) * SR / N_FFT
    edges = mel_to_hz(np.linspace(hz_to_mel(FMIN), hz_to_mel(FMAX), N_MELS + 2))
    fb = np.zeros((N_MELS, bins.size))
    for b in range(N_MELS):
        lo, mid, hi = edges[b], edges[b + 1], edges[b + 2]
        rising = (bins - lo) / (mid - lo)
        falling = (hi - bins) / (hi - mid)
        fb[b] = np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (hi - lo))
    return fb


def melspectrogram(x):
    x = x.astype(np.float64)
    y = np.empty_like(x)
    y[0] = x[0]
    y[1:] = x[1:] - 0.97 * x[:-1]  # lfilter([1, -0.97], [1], x)
    padded = np.pad(y, N_FFT // 2, mode="reflect")
    steps = 1 + (padded.size - N_FFT) // HOP
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic Hann
    frames = np.stack([padded[t * HOP : t * HOP + N_FFT] * window for t in range(steps)])
    magnitude = np.abs(np.fft.rfft(frames, axis=1)).T  # [401, T]
    mel = filterbank() @ magnitude
    db = 20.0 * np.log10(np.maximum(1e-5, mel)) - 20.0
    return np.clip(8.0 * ((db + 100.0) / 100.0) - 4.0, -4.0, 4.0)


if __name__ == "__main__":
    samples = np.fromfile(sys.argv[1], dtype="<f4")
    melspectrogram(samples).astype("<f4").tofile(sys.argv[2])
