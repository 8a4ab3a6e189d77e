"""``audio_transcode``: decode, resample and re-encode audio to one target format, streaming.

Every readable audio item of a row (and, with ``from_video: true``, the audio track of each video
item) is decoded with PyAV, resampled with ``av.AudioResampler`` to ``sample_rate`` / ``channels``
and encoded to FLAC (16-bit) or WAV (PCM s16le) frame by frame: memory stays bounded by one codec
frame whatever the length of the file. Files go to the stage's artifacts folder
(``OUT/artifacts/<stage>``) under a name made from the row id and the media index
(``<id>-<index>.flac``), written to a temporary name and renamed, so a rerun overwrites them.

The media item is updated in place: ``uri`` points at the new file (tar ``member``/``offset``/
``length`` are cleared), ``format``, ``codec``, ``sample_rate``, ``channels``, ``duration_s`` (decoded
samples / rate), ``bytes`` and ``sha256`` describe the new bytes. ``meta["original_uri"]`` keeps the
first original uri and ``meta["transcode"]`` lists, per item, what it was before (uri, member, format,
codec, sample rate, channels, sha256). The row's ``content_hash`` and ``id`` do not change (they
stay those of the ingested bytes), and row scores from ``probe`` keep describing the *source*: a
``sample_rate`` filter after this stage still sees 8 kHz for an 8 kHz file upsampled to 16 kHz.

A video's audio track becomes a new audio media item with role ``audio_track`` appended to
``media`` (the row gains the ``audio`` modality; its layout is unchanged).

This module also holds the streaming audio helpers the other audio operators share:
``AudioDecoder`` (media ref -> float32 ``(channels, n)`` chunks at a chosen rate/layout) and
``AudioWriter`` (chunks -> FLAC/WAV via a temporary file).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from operators.base import FATAL_ERRORS, OperatorError, Params, RowOperator, SkipSample
from operators.errors import media_failure
from operators.media_io import MediaUnavailable, open_media, sha256_media, uri_of
from operators.registry import register_operator
from schemas.enums import Modality, ReasonCode

__all__ = [
    "AudioDecoder",
    "AudioTranscode",
    "AudioTranscodeParams",
    "AudioWriter",
    "layout_name",
    "load_meta",
    "output_folder",
    "store_meta",
]

log = logging.getLogger(__name__)

#: container format -> (codec, file suffix)
FORMATS: dict[str, tuple[str, str]] = {"flac": ("flac", "flac"), "wav": ("pcm_s16le", "wav")}


def layout_name(channels: int) -> str:
    """FFmpeg's default channel layout for a channel count (mono, stereo, 5.1...)."""
    import av

    if channels == 1:
        return "mono"
    if channels == 2:
        return "stereo"
    return av.AudioLayout(channels).name


def load_meta(row: dict[str, Any]) -> dict[str, Any]:
    """``row["meta"]`` (a JSON string) as a dict; a non-object value is kept under ``_meta``."""
    raw = row.get("meta")
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {"_meta": raw}
    return value if isinstance(value, dict) else {"_meta": value}


def store_meta(row: dict[str, Any], meta: dict[str, Any]) -> None:
    row["meta"] = json.dumps(meta, sort_keys=True, ensure_ascii=False, default=str) if meta else None


def output_folder(op: Any, explicit: str | None) -> Path:
    """Where an operator writes the files it makes: its ``output_dir`` param, else the run's
    artifacts folder for the stage (set by the engine)."""
    folder = explicit or op.artifacts_dir
    if not folder:
        raise OperatorError(
            f"'{op.stage}' writes files but has no folder: run it in a pipeline (the engine sets "
            "OUT/artifacts/<stage>) or set params.output_dir"
        )
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    return path


class AudioDecoder:
    """Stream the first audio track of a media item as float32 ``(channels, n)`` chunks.

    ``sample_rate`` / ``channels`` of None keep the source's. ``max_seconds`` stops decoding after
    that much output audio. Use as a context manager; iterate it once. Opening problems raise
    ``SkipSample`` (missing_file, unreadable, corrupt_media); so does a decoder error mid-way.
    After iteration, ``samples`` is the number of samples (per channel) yielded.
    """

    def __init__(
        self,
        media: dict[str, Any],
        *,
        sample_rate: int | None = None,
        channels: int | None = None,
        max_seconds: float | None = None,
    ) -> None:
        self.media = media
        self._want_rate, self._want_channels = sample_rate, channels
        self.max_seconds = max_seconds
        self.samples = 0
        self._file: Any = None
        self._container: Any = None

    def __enter__(self) -> AudioDecoder:
        import av

        where = uri_of(self.media)
        try:
            self._file = open_media(self.media)
        except MediaUnavailable as e:
            raise media_failure(e, where) from e
        try:
            self._container = av.open(self._file, mode="r", metadata_errors="ignore")
            streams = self._container.streams.audio
            if not streams:
                raise SkipSample(ReasonCode.CORRUPT_MEDIA, f"{where}: no audio stream")
            self.stream = streams[0]
            self.source_rate = int(self.stream.sample_rate or self.stream.codec_context.sample_rate or 0)
            self.source_channels = int(self.stream.channels or self.stream.codec_context.channels or 0)
            if not self.source_rate or not self.source_channels:
                raise SkipSample(ReasonCode.CORRUPT_MEDIA, f"{where}: audio stream has no sample rate or channels")
        except SkipSample:
            self.__exit__(None, None, None)
            raise
        except FATAL_ERRORS:
            self.__exit__(None, None, None)
            raise
        except Exception as e:  # noqa: BLE001 - the container cannot be parsed
            self.__exit__(None, None, None)
            raise media_failure(e, where) from e
        self.sample_rate = int(self._want_rate or self.source_rate)
        self.channels = int(self._want_channels or self.source_channels)
        self.source_codec = self.stream.codec_context.name
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def __iter__(self) -> Iterator[np.ndarray]:
        import av

        resampler = av.AudioResampler(format="fltp", layout=layout_name(self.channels), rate=self.sample_rate)
        limit = round(self.max_seconds * self.sample_rate) if self.max_seconds is not None else None
        self.stream.codec_context.thread_count = 1
        try:
            for packet in self._container.demux(self.stream):
                for frame in packet.decode():
                    for out in resampler.resample(frame):
                        chunk = self._take(out.to_ndarray(), limit)
                        if chunk is not None:
                            yield chunk
                        if limit is not None and self.samples >= limit:
                            return
            for out in resampler.resample(None):
                chunk = self._take(out.to_ndarray(), limit)
                if chunk is not None:
                    yield chunk
        except (SkipSample, *FATAL_ERRORS):
            raise
        except av.FFmpegError as e:
            raise media_failure(e, uri_of(self.media)) from e

    def _take(self, arr: np.ndarray, limit: int | None) -> np.ndarray | None:
        arr = np.asarray(arr, dtype=np.float32).reshape(self.channels, -1)
        if limit is not None:
            arr = arr[:, : max(0, limit - self.samples)]
        if arr.shape[1] == 0:
            return None
        self.samples += arr.shape[1]
        return arr


class AudioWriter:
    """Encode float32 ``(channels, n)`` chunks to FLAC or WAV; atomically renamed on close.

    Use as a context manager: on an exception the temporary file is removed and nothing appears
    at ``path``. ``samples`` counts what was written (per channel).
    """

    def __init__(self, path: str | Path, *, fmt: str, sample_rate: int, channels: int) -> None:
        import av

        if fmt not in FORMATS:
            raise ValueError(f"unknown audio format {fmt!r}; expected one of {sorted(FORMATS)}")
        self.path = Path(path)
        self.fmt, self.sample_rate, self.channels = fmt, sample_rate, channels
        self.codec = FORMATS[fmt][0]
        self.samples = 0
        self._tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")
        self._layout = layout_name(channels)
        self._out = av.open(str(self._tmp), "w", format=fmt)
        self._stream = self._out.add_stream(self.codec, rate=sample_rate)
        self._stream.layout = self._layout

    def write(self, chunk: np.ndarray) -> None:
        import av

        if chunk.shape[1] == 0:
            return
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk, dtype=np.float32), format="fltp", layout=self._layout)
        frame.sample_rate, frame.pts = self.sample_rate, self.samples
        self._out.mux(self._stream.encode(frame))
        self.samples += chunk.shape[1]

    def close(self) -> Path:
        self._out.mux(self._stream.encode(None))
        self._out.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        try:
            self._out.close()
        finally:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> AudioWriter:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def written_media(path: Path, writer: AudioWriter, *, role: str = "input") -> dict[str, Any]:
    """A media dict describing a file an ``AudioWriter`` just closed."""
    from schemas.record import new_media

    media = new_media(
        Modality.AUDIO.value,
        str(path),
        role=role,
        format=writer.fmt,
        codec=writer.codec,
        sample_rate=writer.sample_rate,
        channels=writer.channels,
        duration_s=writer.samples / writer.sample_rate,
    )
    media["sha256"], media["bytes"] = sha256_media(media)
    return media


def transcode(
    media: dict[str, Any], path: Path, *, fmt: str, sample_rate: int | None, channels: int | None
) -> tuple[AudioWriter, AudioDecoder]:
    """Decode ``media``'s first audio track into ``path`` (FLAC/WAV), streaming."""
    with AudioDecoder(media, sample_rate=sample_rate, channels=channels) as dec:
        writer = AudioWriter(path, fmt=fmt, sample_rate=dec.sample_rate, channels=dec.channels)
        with writer:
            for chunk in dec:
                writer.write(chunk)
            if writer.samples == 0:
                raise SkipSample(ReasonCode.CORRUPT_MEDIA, f"{uri_of(media)}: no decodable audio samples")
    return writer, dec


class AudioTranscodeParams(Params):
    sample_rate: int | None = Field(16000, ge=8000, le=192000, description="target sample rate in Hz; null keeps the source's")
    channels: int | None = Field(1, ge=1, le=8, description="target channel count (1 = downmix to mono); null keeps the source's")
    format: Literal["flac", "wav"] = Field("flac", description="output container: flac (lossless, 16-bit) or wav (PCM s16le)")
    from_video: bool = Field(
        False, description="also extract the audio track of video items into a new audio item (role audio_track)"
    )
    force: bool = Field(
        False, description="re-encode items that are already in the target format, rate and channels (default: leave them)"
    )
    output_dir: str | None = Field(None, description="write files here instead of the run's OUT/artifacts/<stage> folder")


@register_operator
class AudioTranscode(RowOperator[AudioTranscodeParams]):
    """Decode and resample audio (and optionally video audio tracks) to FLAC/WAV files, streaming."""

    name: ClassVar[str] = "audio_transcode"
    default_batch_size: ClassVar[int] = 16
    requires: ClassVar[tuple[tuple[str, str], ...]] = (("av", "av>=12"),)
    writes: ClassVar[dict[str, str]] = {
        "transcoded": "audio items this stage wrote (0: every item was already in the target format)",
    }

    def _matches(self, media: dict[str, Any]) -> bool:
        p = self.params
        return (
            not p.force
            and media.get("codec") == FORMATS[p.format][0]
            and (media.get("format") or "") == p.format
            and (p.sample_rate is None or media.get("sample_rate") == p.sample_rate)
            and (p.channels is None or media.get("channels") == p.channels)
        )

    def process(self, row: dict[str, Any]) -> None:
        p = self.params
        media_list = row.get("media") or []
        jobs: list[tuple[int, dict[str, Any]]] = []
        for i, m in enumerate(media_list):
            if m.get("error"):
                continue
            audio = m.get("modality") == Modality.AUDIO.value and not self._matches(m)
            video = m.get("modality") == Modality.VIDEO.value and p.from_video and m.get("has_audio") is not False
            if audio or video:
                jobs.append((i, m))
        if not jobs:
            row["scores"] = {**(row.get("scores") or {}), "transcoded": 0.0}
            return
        folder = output_folder(self, p.output_dir)
        meta = load_meta(row)
        history = list(meta.get("transcode") or [])
        added: list[dict[str, Any]] = []
        done = 0
        for i, m in jobs:
            path = folder / f"{row['id']}-{i}.{FORMATS[p.format][1]}"
            if m["modality"] == Modality.VIDEO.value:
                if any(x.get("role") == "audio_track" and x.get("uri") == str(path) for x in media_list):
                    continue  # already extracted (a rerun over an updated row)
                try:
                    writer, dec = transcode(m, path, fmt=p.format, sample_rate=p.sample_rate, channels=p.channels)
                except SkipSample as e:
                    if m.get("has_audio") is None and "no audio stream" in e.detail:
                        continue  # not probed, and it has no audio: nothing to extract
                    raise
                item = written_media(path, writer, role="audio_track")
                added.append(item)
                history.append({"media_index": len(media_list) + len(added) - 1, "from_video_index": i,
                                "original_uri": uri_of(m), "original_codec": dec.source_codec,
                                "original_sample_rate": dec.source_rate, "original_channels": dec.source_channels})  # fmt: skip
            else:
                writer, dec = transcode(m, path, fmt=p.format, sample_rate=p.sample_rate, channels=p.channels)
                history.append({"media_index": i, "original_uri": m.get("uri"), "original_member": m.get("member"),
                                "original_format": m.get("format"), "original_codec": dec.source_codec,
                                "original_sample_rate": dec.source_rate, "original_channels": dec.source_channels,
                                "original_sha256": m.get("sha256")})  # fmt: skip
                meta.setdefault("original_uri", m.get("uri"))
                new = written_media(path, writer, role=m.get("role") or "input")
                m.update({k: new[k] for k in ("uri", "format", "codec", "sample_rate", "channels", "duration_s", "bytes", "sha256")})
                m.update(member=None, offset=None, length=None)
            done += 1
        if added:
            row["media"] = [*media_list, *added]
            if Modality.AUDIO.value not in (row.get("modalities") or []):
                row["modalities"] = [*(row.get("modalities") or []), Modality.AUDIO.value]
        if history:
            meta["transcode"] = history
        store_meta(row, meta)
        row["scores"] = {**(row.get("scores") or {}), "transcoded": float(done)}
