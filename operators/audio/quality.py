"""``audio_quality``: loudness, level, clipping, silence and an SNR estimate, in one streaming pass.

The first readable audio item of a row (an ``audio_track`` made by ``audio_transcode`` counts; with
``from_video: true`` the audio stream of the first video item is used when the row has no audio
item) is decoded chunk by chunk at its own sample rate and channel count. Nothing is kept per
sample: the numbers below are accumulated over the chunks, so memory is O(duration / 30 ms)
floats at most, and ``max_seconds`` caps the work (a two-hour file is analysed for its first
``max_seconds`` only; ``quality_seconds`` says how much was read).

- ``loudness_lufs``: integrated loudness per ITU-R BS.1770-4 / EBU R128, implemented here as a
  streaming meter (no pyloudnorm, which needs the whole signal): K-weighting (the standard's
  high-shelf and high-pass biquads, derived for the file's sample rate with the same analogue
  prototype as libebur128/FFmpeg), per-channel weights (1.0; 1.41 for surround channels; LFE
  excluded), mean square over 400 ms blocks with 75 % overlap (kept as 100 ms sub-block sums),
  then the absolute gate (-70 LUFS) and the relative gate (-10 LU). -70.0 when nothing passes the
  absolute gate (silence), as FFmpeg reports. tests/test_audio_quality.py checks it against
  FFmpeg's ``ebur128`` filter, run through PyAV's filter graph, within 1 dB (in practice < 0.1 dB).
- ``rms_dbfs``: 20*log10 of the RMS over all samples of all channels, full scale = 1.0 (a
  full-scale sine reads -3.01). ``peak_dbfs``: sample peak (not true peak). Both floor at -100.
- ``clipping_ratio``: fraction of samples (all channels) with |x| >= ``clip_level`` (0.999 FS).
- ``silence_ratio``: fraction of ``frame_ms`` (30 ms) frames whose mean square over channels is
  below ``silence_db`` dBFS (frames are counted from the first sample; a trailing partial frame is
  ignored unless the file is shorter than one frame).
- ``snr_db``: an estimate for speech-like recordings without a reference: the mean energy of the
  loudest ``snr_fraction`` (10 %) of frames over that of the quietest 10 %, in dB (pauses carry the
  noise floor). Energies floor at -100 dBFS, so digital silence in the pauses reads up to ~100 dB;
  a steady signal with no pauses (a tone, music without breaks) reads near 0: threshold it only
  for speech.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from operators.audio.transcode import AudioDecoder
from operators.base import Params, RowOperator, SkipSample
from operators.media_io import uri_of
from operators.registry import register_operator
from schemas.enums import Modality, ReasonCode

__all__ = ["AudioQuality", "AudioQualityParams", "AudioStats", "LoudnessMeter", "k_weighting"]

#: dB value reported for digital silence (rms, peak) and the energy floor of the SNR estimate
FLOOR_DB = -100.0
_FLOOR_POWER = 10 ** (FLOOR_DB / 10)
_ABS_GATE = -70.0
_REL_GATE = -10.0


def k_weighting(sample_rate: int) -> np.ndarray:
    """BS.1770 K-weighting as second-order sections (high shelf, then high pass) for any rate.

    The coefficients come from the analogue prototypes that give the standard's 48 kHz values
    (the same derivation libebur128 and FFmpeg's ebur128 filter use).
    """
    f0, gain_db, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * f0 / sample_rate)
    vh = 10 ** (gain_db / 20)
    vb = vh**0.4996667741545416
    a0 = 1 + k / q + k * k
    shelf = [(vh + vb * k / q + k * k) / a0, 2 * (k * k - vh) / a0, (vh - vb * k / q + k * k) / a0,
             1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0]  # fmt: skip
    f0, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * f0 / sample_rate)
    a0 = 1 + k / q + k * k
    highpass = [1.0, -2.0, 1.0, 1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0]
    return np.array([shelf, highpass])


def _channel_weights(channels: int) -> np.ndarray:
    """BS.1770 weights in FFmpeg's default channel order: L R C (1.0), LFE (0), surrounds (1.41)."""
    if channels <= 3:
        return np.ones(channels)
    w = np.full(channels, 1.41)
    w[:3] = 1.0
    if channels >= 6:
        w[3] = 0.0  # LFE of 5.1 / 7.1 layouts
    return w


class LoudnessMeter:
    """Streaming BS.1770-4 integrated loudness: feed ``(channels, n)`` chunks, then ``integrated()``."""

    def __init__(self, sample_rate: int, channels: int) -> None:
        self.rate, self.channels = sample_rate, channels
        self.sos = k_weighting(sample_rate)
        self.zi = np.zeros((self.sos.shape[0], channels, 2))
        self.weights = _channel_weights(channels)[:, None]
        self.pos = 0  # samples fed so far
        self._sub = 0  # index of the 100 ms sub-block being filled
        self._acc = 0.0
        self.sums: list[float] = []  # weighted sum of squares per complete 100 ms sub-block
        self.counts: list[int] = []

    def _boundary(self, k: int) -> int:
        return round(k * self.rate / 10)

    def feed(self, chunk: np.ndarray) -> None:
        from scipy.signal import sosfilt

        y, self.zi = sosfilt(self.sos, chunk.astype(np.float64), axis=-1, zi=self.zi)
        power = (self.weights * y * y).sum(axis=0)
        cum = np.concatenate(([0.0], np.cumsum(power)))
        start, end = self.pos, self.pos + power.shape[0]
        cut = start
        while (b := self._boundary(self._sub + 1)) <= end:
            self._acc += cum[b - start] - cum[cut - start]
            self.sums.append(self._acc)
            self.counts.append(b - self._boundary(self._sub))
            self._acc, cut = 0.0, b
            self._sub += 1
        self._acc += cum[end - start] - cum[cut - start]
        self.pos = end

    def block_powers(self) -> np.ndarray:
        """Mean weighted square of each complete 400 ms block (hop 100 ms)."""
        if len(self.sums) < 4:
            return np.zeros(0)
        sums = np.convolve(np.asarray(self.sums), np.ones(4), mode="valid")
        counts = np.convolve(np.asarray(self.counts, dtype=np.float64), np.ones(4), mode="valid")
        return sums / counts

    def integrated(self) -> float:
        p = self.block_powers()
        with np.errstate(divide="ignore"):
            loud = -0.691 + 10 * np.log10(p)
        passed = p[loud > _ABS_GATE]
        if passed.size == 0:
            return _ABS_GATE
        relative = -0.691 + 10 * math.log10(passed.mean()) + _REL_GATE
        gated = p[(loud > _ABS_GATE) & (loud > relative)]
        return float(-0.691 + 10 * math.log10(gated.mean()))


def _db(power: float) -> float:
    return max(FLOOR_DB, 10 * math.log10(power)) if power > 0 else FLOOR_DB


class AudioStats:
    """Streaming level statistics over ``(channels, n)`` float chunks (see the module docstring)."""

    def __init__(
        self,
        sample_rate: int,
        channels: int,
        *,
        frame_ms: float = 30.0,
        silence_db: float = -50.0,
        clip_level: float = 0.999,
        snr_fraction: float = 0.1,
    ) -> None:
        self.rate, self.channels = sample_rate, channels
        self.frame = max(1, round(sample_rate * frame_ms / 1000))
        self.silence_db, self.clip_level, self.snr_fraction = silence_db, clip_level, snr_fraction
        self.loudness = LoudnessMeter(sample_rate, channels)
        self.samples = 0
        self.sumsq = 0.0
        self.peak = 0.0
        self.clipped = 0
        self._rest = np.zeros((channels, 0), np.float32)
        self._energies: list[np.ndarray] = []

    def feed(self, chunk: np.ndarray) -> None:
        if chunk.shape[1] == 0:
            return
        x = chunk.astype(np.float64)
        self.samples += x.shape[1]
        self.sumsq += float(np.einsum("ij,ij->", x, x))
        mag = np.abs(chunk)
        self.peak = max(self.peak, float(mag.max()))
        self.clipped += int(np.count_nonzero(mag >= self.clip_level))
        self.loudness.feed(chunk)
        buf = np.concatenate([self._rest, chunk], axis=1) if self._rest.shape[1] else chunk
        full = buf.shape[1] // self.frame * self.frame
        if full:
            frames = buf[:, :full].astype(np.float64).reshape(self.channels, -1, self.frame)
            self._energies.append((frames * frames).mean(axis=(0, 2)))
        self._rest = buf[:, full:].copy()

    def frame_energies(self) -> np.ndarray:
        """Mean square over channels of each complete frame (the partial frame if there is no other)."""
        if self._energies:
            return np.concatenate(self._energies)
        if self._rest.shape[1]:
            return np.array([float((self._rest.astype(np.float64) ** 2).mean())])
        return np.zeros(0)

    def result(self) -> dict[str, float]:
        values = self.samples * self.channels
        e = self.frame_energies()
        scores = {
            "loudness_lufs": self.loudness.integrated(),
            "rms_dbfs": _db(self.sumsq / values) if values else FLOOR_DB,
            "peak_dbfs": max(FLOOR_DB, 20 * math.log10(self.peak)) if self.peak > 0 else FLOOR_DB,
            "clipping_ratio": self.clipped / values if values else 0.0,
            "quality_seconds": self.samples / self.rate,
        }
        if e.size:
            with np.errstate(divide="ignore"):
                db = 10 * np.log10(e)
            scores["silence_ratio"] = float(np.count_nonzero(db < self.silence_db) / e.size)
            k = max(1, int(e.size * self.snr_fraction))
            ordered = np.sort(np.maximum(e, _FLOOR_POWER))
            scores["snr_db"] = float(10 * np.log10(ordered[-k:].mean() / ordered[:k].mean()))
        else:
            scores["silence_ratio"], scores["snr_db"] = 1.0, 0.0
        return scores


def audio_item(row: dict[str, Any], from_video: bool) -> dict[str, Any] | None:
    """The media item the audio operators analyse: the first readable audio item, else (when
    ``from_video``) the first readable video item that may have audio."""
    media = [m for m in row.get("media") or [] if not m.get("error")]
    for m in media:
        if m.get("modality") == Modality.AUDIO.value:
            return m
    if from_video:
        for m in media:
            if m.get("modality") == Modality.VIDEO.value and m.get("has_audio") is not False:
                return m
    return None


class AudioQualityParams(Params):
    max_seconds: float | None = Field(
        3600.0, gt=0, description="analyse at most this many seconds from the start (null: the whole file, still streaming)"
    )
    frame_ms: float = Field(30.0, gt=1, le=1000, description="frame length in ms for silence_ratio and snr_db")
    silence_db: float = Field(-50.0, le=0, description="a frame whose level (dBFS) is below this is silent")
    clip_level: float = Field(0.999, gt=0, le=1, description="|sample| at or above this fraction of full scale counts as clipped")
    snr_fraction: float = Field(0.1, gt=0, le=0.5, description="fraction of loudest / quietest frames compared by snr_db")
    from_video: bool = Field(False, description="analyse a video's audio stream when the row has no audio item")


@register_operator
class AudioQuality(RowOperator[AudioQualityParams]):
    """Measure loudness (BS.1770), level, clipping, silence and an SNR estimate of audio, streaming."""

    name: ClassVar[str] = "audio_quality"
    default_batch_size: ClassVar[int] = 16
    requires: ClassVar[tuple[tuple[str, str], ...]] = (("av", "av>=12"), ("scipy", "scipy>=1.10"))
    writes: ClassVar[dict[str, str]] = {
        "loudness_lufs": "integrated loudness, ITU-R BS.1770-4 with gating (LUFS; -70 for silence)",
        "rms_dbfs": "RMS level over all samples and channels, dBFS (full-scale sine = -3.01; floor -100)",
        "peak_dbfs": "sample peak, dBFS (floor -100)",
        "clipping_ratio": "fraction of samples with |x| >= clip_level (0.999 of full scale)",
        "silence_ratio": "fraction of 30 ms frames below silence_db (-50 dBFS)",
        "snr_db": "loudest 10% of frames vs quietest 10%, dB: an SNR estimate for speech (pauses = noise)",
        "quality_seconds": "seconds of audio analysed (capped by max_seconds)",
    }

    def process(self, row: dict[str, Any]) -> None:
        p = self.params
        media = audio_item(row, p.from_video)
        if media is None:
            return
        with AudioDecoder(media, max_seconds=p.max_seconds) as dec:
            stats = AudioStats(dec.sample_rate, dec.channels, frame_ms=p.frame_ms, silence_db=p.silence_db,
                               clip_level=p.clip_level, snr_fraction=p.snr_fraction)  # fmt: skip
            for chunk in dec:
                stats.feed(chunk)
        if stats.samples == 0:
            raise SkipSample(ReasonCode.CORRUPT_MEDIA, f"{uri_of(media)}: no decodable audio samples")
        row["scores"] = {**(row.get("scores") or {}), **stats.result()}
