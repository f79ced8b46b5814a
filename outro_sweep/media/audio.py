"""Audio track -> one mono float32 waveform at a requested sample rate, for omni models.

Omni video models (audio + frames) take a 1-D waveform at a fixed rate (16 kHz for the
Whisper-style audio towers), so every clip's track is downmixed and resampled here with
libswresample through PyAV's ``AudioResampler``, whatever its codec, channel layout or rate.
The caller feeds decoded frames one by one (decode.py does it in the same demux pass as the
video, so the file is read once) and calls ``finish`` at the end.

PyAV is imported when a collector is built, not at import time (settings checks import this
package and must stay fast).
"""

from __future__ import annotations

import numpy as np

DEFAULT_SAMPLE_RATE = 16000  # Hz; what Whisper-style audio encoders expect


class MonoAudioCollector:
    """Resample ``av.AudioFrame``s to mono float32 at ``sample_rate`` Hz and concatenate them.

    Downmixing follows libswresample's standard matrix (stereo -> mono is (L + R) / sqrt(2),
    the same as ``ffmpeg -ac 1``), so a full-scale signal in both channels can exceed 1;
    ``finish`` clips the result into [-1, 1].
    """

    def __init__(self, sample_rate: int = DEFAULT_SAMPLE_RATE):
        import av

        self.sample_rate = int(sample_rate)
        # "flt" (packed float32) with one channel: to_ndarray() gives shape (1, samples).
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=self.sample_rate)
        self._chunks: list[np.ndarray] = []

    def add(self, frame) -> None:
        """Resample one decoded ``av.AudioFrame`` (any format/layout/rate) and keep it."""
        for out in self._resampler.resample(frame):
            self._chunks.append(out.to_ndarray().reshape(-1))

    def finish(self) -> np.ndarray | None:
        """The whole waveform, shape (N,) float32 in [-1, 1] at ``sample_rate``; None if empty.

        Flushes the resampler's internal delay (its last few ms) first, so N is about
        duration_s * sample_rate. Call once.
        """
        for out in self._resampler.resample(None):
            self._chunks.append(out.to_ndarray().reshape(-1))
        if not self._chunks:
            return None
        waveform = np.concatenate(self._chunks).astype(np.float32, copy=False)
        self._chunks = []
        if waveform.size == 0:
            return None
        return np.clip(waveform, -1.0, 1.0, out=waveform)
