"""``video_shots``: cut videos into shots and write each shot as a new, transcoded clip.

Two streaming passes over the file, never holding more than one frame:

1. detect: decode every frame (PyAV, threaded), scale it to a tiny RGB picture (64x36 by default)
   and compare it with the previous one, by mean absolute pixel difference (``pixel``) or by the
   distance between 64-bin colour histograms (``histogram``); a score at or above ``threshold``
   (and, by default, at least ``adaptive_ratio`` times the median score of the frames just before,
   so fast motion is not taken for a cut) starts a new shot at that frame's time.
2. plan and write: shots shorter than ``min_clip_s`` are not written (they become dropped child
   rows, reason ``below_min``, so the ledger shows them); shots longer than ``max_clip_s`` are cut
   into the fewest equal pieces of at most ``max_clip_s``. Each piece is re-encoded (stream copy
   cannot cut between keyframes) into the standard training format that ``transcode`` sets, at a
   constant frame rate (each output frame shows the source frame on screen at its time), with the
   audio track re-encoded (AAC) unless ``drop_audio``. Pieces are written in one decode pass from
   the first written piece on, to ``<artifacts>/<id[:2]>/<parent id>_clip<NNN>.<container>`` through
   a temporary name and ``os.replace`` (a rerun overwrites the same files).

Each written piece becomes a child row (``derive(row, suffix="clipNNN")``): its media is the clip
(with its sha256, so exact dedup sees equal clips as duplicates), it keeps the parent's caption and
scores, with the clip's own duration/size/fps numbers and ``clip_start_s``/``clip_end_s``; meta
``clip`` records index, shot, times and the parent's media reference. The parent ends ``split``.
A video that is one shot needing no cut is kept as it is (unless ``always_write``); a whole video
shorter than ``min_clip_s`` is dropped. Rows without exactly one readable video are untouched.
Encoding uses ``transcode.threads`` threads (default 1: Ray runs one task per core anyway) and, for
libx264, no macroblock-tree rate control (``transcode.reproducible``): the same input then gives the
same clip bytes on any machine, so clips of duplicate videos are exact duplicates.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, ClassVar

from operators.base import ExpandOperator, OperatorError, mark
from operators.errors import media_errors
from operators.media_io import uri_of
from operators.registry import register_operator
from operators.video.clip_writer import ClipRouter, write_clips
from operators.video.decode import dump_meta, load_meta, open_av, video_items, video_stream
from operators.video.shot_detect import detect_cuts, plan_pieces
from operators.video.shot_params import TranscodeParams, VideoShotsParams
from schemas.enums import ReasonCode, Status
from schemas.record import derive

__all__ = ["VideoShots"]


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@register_operator
class VideoShots(ExpandOperator[VideoShotsParams]):
    """Cut videos into shots (content change) and write each as a transcoded clip row."""

    name: ClassVar[str] = "video_shots"
    default_batch_size: ClassVar[int] = 8
    requires: ClassVar[tuple[tuple[str, str], ...]] = (("av", "av>=12"),)
    writes: ClassVar[dict[str, str]] = {
        "num_shots": "shots detected in the source video (before min/max rules); on the parent and every clip",
        "clip_start_s": "where the clip starts in the source video, seconds (0 for a video kept whole)",
        "clip_end_s": "where the clip ends in the source video, seconds (the duration for a video kept whole)",
        "duration_s": "clips: the clip's duration (replaces probe's number for the parent)",
        "fps": "clips: the clip's frame rate",
        "min_side": "clips: shortest side of the clip in pixels",
        "max_side": "clips: longest side of the clip in pixels",
        "pixels": "clips: width * height of the clip",
        "aspect_ratio": "clips: width / height of the clip",
        "bytes": "clips: size of the clip file",
        "has_audio": "clips: 1.0 when the clip has an audio track",
    }

    def validate_setup(self) -> None:
        import av

        tp: TranscodeParams = self.params.transcode  # type: ignore[attr-defined]
        for name in (tp.codec, *(() if self.params.drop_audio else (tp.audio_codec,))):  # type: ignore[attr-defined]
            try:
                av.codec.Codec(name, "w")
            except Exception as e:  # noqa: BLE001
                raise OperatorError(f"video_shots: this FFmpeg build has no encoder '{name}' ({e})") from None
        if tp.container not in av.formats_available:
            raise OperatorError(f"video_shots: unknown container format '{tp.container}'")

    def _clip_path(self, row: dict[str, Any], index: int) -> Path:
        if not self.artifacts_dir:
            raise OperatorError("video_shots needs an artifacts folder (the engine sets OUT/artifacts/<stage>)")
        rid = row["id"] or "noid"
        return Path(self.artifacts_dir) / rid[:2] / f"{rid}_clip{index:03d}.{self.params.transcode.container}"

    def expand(self, row: dict[str, Any]) -> list[dict[str, Any]] | None:
        p = self.params
        videos = video_items(row)
        if len(videos) != 1:
            return None
        vi, media = videos[0]
        with open_av(media) as container:
            vs = video_stream(container, media)
            with media_errors(uri_of(media)):
                shots = detect_cuts(container, vs, p)
        pieces = plan_pieces(shots, p.min_clip_s, p.max_clip_s)
        scores = dict(row.get("scores") or {})
        scores["num_shots"] = float(len(shots.cuts) + 1)
        if len(pieces) == 1 and not p.always_write:
            scores.update(clip_start_s=0.0, clip_end_s=round(shots.end - shots.start, 6))
            row["scores"] = scores
            if not pieces[0].keep:
                self.drop(row, ReasonCode.BELOW_MIN, f"video {pieces[0].seconds:.3f}s < min_clip_s {p.min_clip_s:g}")
            return None
        kept = [pc for pc in pieces if pc.keep]
        paths = {pc.index: self._clip_path(row, pc.index) for pc in kept}
        frames: dict[int, int] = {}
        router = None
        if kept:
            with open_av(media) as container, media_errors(uri_of(media)):
                try:
                    frames, router = write_clips(container, kept, paths, p.transcode, p.drop_audio, media)
                except BaseException:
                    self._remove(paths)  # no half-written clips
                    raise
        children = []
        for pc in pieces:
            child_scores = {
                **scores,
                "clip_start_s": round(pc.start - shots.start, 6),
                "clip_end_s": round(pc.end - shots.start, 6),
                "duration_s": round(pc.seconds, 6),
            }
            meta = load_meta(row)
            meta["clip"] = {
                "index": pc.index,
                "shot": pc.shot,
                "start_s": round(pc.start - shots.start, 6),
                "end_s": round(pc.end - shots.start, 6),
                "source": uri_of(media),
            }
            if pc.keep:
                assert router is not None
                clip = self._clip_media(media, paths[pc.index], frames[pc.index], router)
                child_scores.update(self._clip_scores(clip))
                new_media = [clip if i == vi else m for i, m in enumerate(row["media"]) if m.get("role") != "keyframe"]
            else:
                new_media = row["media"]
            child = derive(
                row, suffix=f"clip{pc.index:03d}", media=new_media, scores=child_scores,
                meta=dump_meta(meta),
            )  # fmt: skip
            if not pc.keep:
                detail = f"clip {pc.seconds:.3f}s < min_clip_s {p.min_clip_s:g}"
                mark(child, Status.DROPPED, self.stage, ReasonCode.BELOW_MIN, detail)
            children.append(child)
        return children

    @staticmethod
    def _remove(paths: dict[int, Path]) -> None:
        for path in paths.values():
            path.unlink(missing_ok=True)

    def _clip_media(self, media: dict[str, Any], path: Path, frames: int, router: ClipRouter) -> dict[str, Any]:
        import av

        tp: TranscodeParams = self.params.transcode  # type: ignore[attr-defined]
        clip = dict(media)
        has_audio = router.audio_in is not None
        w, h = router.size
        clip.update(
            uri=str(path),
            member=None,
            offset=None,
            length=None,
            bytes=path.stat().st_size,
            sha256=_sha256_file(path),
            format=tp.container,
            width=w,
            height=h,
            fps=float(router.fps),
            num_frames=frames,
            duration_s=round(frames / float(router.fps), 6),
            codec=av.codec.Codec(tp.codec, "w").canonical_name,
            has_audio=has_audio,
            audio_codec=av.codec.Codec(tp.audio_codec, "w").canonical_name if has_audio else None,
            sample_rate=(tp.audio_sample_rate or router.audio_in.rate) if router.audio_in else None,
            channels=(tp.audio_channels or min(2, router.audio_in.channels)) if router.audio_in else None,
            error=None,
        )
        return clip

    @staticmethod
    def _clip_scores(clip: dict[str, Any]) -> dict[str, float]:
        w, h = clip["width"], clip["height"]
        return {
            "duration_s": float(clip["duration_s"]),
            "fps": float(clip["fps"]),
            "min_side": float(min(w, h)),
            "max_side": float(max(w, h)),
            "pixels": float(w * h),
            "aspect_ratio": w / h,
            "bytes": float(clip["bytes"]),
            "has_audio": 1.0 if clip["has_audio"] else 0.0,
        }
