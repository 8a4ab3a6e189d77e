"""The sample record: one Arrow schema for every kind of data.

A record carries media by reference (``MediaRef``) plus the metadata that probing found; text
fields; an interleaved sequence for documents; preference and interaction payloads; routing
(tasks, buckets); a scores map ("score now, threshold later"); lineage; and a status with reason.

Operators see records as plain Python dicts shaped like this schema (see ``new_record``) and the
engine moves them as Arrow tables cast to ``SAMPLE_SCHEMA``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pyarrow as pa

from schemas.enums import Status

__all__ = [
    "MEDIA_TYPE",
    "SAMPLE_SCHEMA",
    "TEXT_FIELDS",
    "content_hash",
    "derive",
    "from_table",
    "new_media",
    "new_record",
    "normalise_text",
    "record_id",
    "set_media_error",
    "to_table",
]

#: Text fields a sample may carry (all optional).
TEXT_FIELDS: tuple[str, ...] = ("caption", "alt_text", "instruction", "response", "transcript", "text")

MEDIA_TYPE = pa.struct(
    [
        pa.field("role", pa.string()),  # what this media is for: input, target, source, chosen, observation...
        pa.field("modality", pa.string()),  # image | video | audio
        pa.field("uri", pa.string()),  # local path or fsspec URL; for a tar member, the tar's path
        pa.field("member", pa.string()),  # tar member name, when the media lives inside a tar
        pa.field("offset", pa.int64()),  # byte offset of the member's data inside the tar
        pa.field("length", pa.int64()),  # byte length of the member's data inside the tar
        pa.field("bytes", pa.int64()),  # size of the media in bytes
        pa.field("sha256", pa.string()),  # content hash of the media bytes
        pa.field("format", pa.string()),  # container/format as probed (jpeg, png, mp4, wav...)
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("duration_s", pa.float64()),
        pa.field("fps", pa.float64()),
        pa.field("num_frames", pa.int64()),
        pa.field("codec", pa.string()),  # video codec (or audio codec for audio media)
        pa.field("audio_codec", pa.string()),  # audio stream codec inside a video
        pa.field("has_audio", pa.bool_()),
        pa.field("sample_rate", pa.int32()),
        pa.field("channels", pa.int32()),
        pa.field("error", pa.string()),  # why this media item could not be read: "<reason>: <detail>", for people
        pa.field("error_reason", pa.string()),  # the same reason as a ReasonCode value, for code
    ]
)

TURN_TYPE = pa.struct([pa.field("role", pa.string()), pa.field("text", pa.string())])
SEGMENT_TYPE = pa.struct(
    [
        pa.field("kind", pa.string()),  # text | media
        pa.field("text", pa.string()),
        pa.field("media_index", pa.int32()),  # index into `media`
    ]
)
CANDIDATE_TYPE = pa.struct(
    [
        pa.field("text", pa.string()),
        pa.field("media_index", pa.int32()),
        pa.field("score", pa.float64()),
    ]
)
PREFERENCE_TYPE = pa.struct(
    [
        pa.field("prompt", pa.string()),
        pa.field("chosen", pa.string()),
        pa.field("rejected", pa.string()),
        pa.field("chosen_media", pa.int32()),
        pa.field("rejected_media", pa.int32()),
        pa.field("candidates", pa.list_(CANDIDATE_TYPE)),
    ]
)
STEP_TYPE = pa.struct(
    [
        pa.field("observation", pa.string()),
        pa.field("media_index", pa.int32()),
        pa.field("action", pa.string()),  # the action as JSON text (click, type, tool call...)
    ]
)
INTERACTION_TYPE = pa.struct(
    [
        pa.field("goal", pa.string()),
        pa.field("environment", pa.string()),  # web | gui | mobile | desktop | tool | embodied
        pa.field("steps", pa.list_(STEP_TYPE)),
    ]
)

SAMPLE_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),  # stable id: hash of content hash + source + locator
        pa.field("content_hash", pa.string()),  # hash of media bytes and normalised text (exact dedup key)
        pa.field("source", pa.string()),  # source name from the pipeline config
        pa.field("locator", pa.string()),  # where the row came from: path, manifest:line, tar#member
        pa.field("license", pa.string()),
        pa.field("seq", pa.int64()),  # ingest order (unit << 20 | row): "first seen" for dedup
        pa.field("unit", pa.string()),  # ingest unit the row came from (resume bookkeeping)
        pa.field("modalities", pa.list_(pa.string())),
        pa.field("layout", pa.string()),
        pa.field("media", pa.list_(MEDIA_TYPE)),
        pa.field("caption", pa.string()),
        pa.field("alt_text", pa.string()),
        pa.field("instruction", pa.string()),
        pa.field("response", pa.string()),
        pa.field("transcript", pa.string()),
        pa.field("text", pa.string()),  # plain text body (text-only rows, documents)
        pa.field("language", pa.string()),
        pa.field("conversation", pa.list_(TURN_TYPE)),
        pa.field("interleaved", pa.list_(SEGMENT_TYPE)),
        pa.field("preference", PREFERENCE_TYPE),
        pa.field("interaction", INTERACTION_TYPE),
        pa.field("tasks", pa.list_(pa.string())),
        pa.field("buckets", pa.list_(pa.string())),
        pa.field("scores", pa.map_(pa.string(), pa.float64())),
        pa.field("lineage", pa.list_(pa.string())),
        pa.field("status", pa.string()),
        pa.field("status_operator", pa.string()),
        pa.field("status_reason", pa.string()),
        pa.field("status_detail", pa.string()),
        pa.field("duplicate_of", pa.string()),  # id of the surviving row, for duplicates
        pa.field("parent_id", pa.string()),  # id of the row this one was derived from (a clip of a video)
        pa.field("meta", pa.string()),  # JSON of source fields we did not map (nothing is lost)
    ]
)

_MEDIA_FIELDS = [f.name for f in MEDIA_TYPE]


def new_media(modality: str, uri: str, **fields: Any) -> dict[str, Any]:
    """A media reference dict with every field present."""
    media = dict.fromkeys(_MEDIA_FIELDS)
    media.update(modality=modality, uri=uri, role=fields.pop("role", "input"))
    unknown = set(fields) - set(_MEDIA_FIELDS)
    if unknown:
        raise KeyError(f"unknown media fields: {sorted(unknown)}")
    media.update(fields)
    return media


def set_media_error(media: dict[str, Any], reason: str, detail: str) -> None:
    """Mark one media item unusable: ``error_reason`` (a ReasonCode value) and a readable ``error``."""
    media["error_reason"] = str(reason)
    media["error"] = f"{reason}: {detail}"


def new_record(*, source: str, locator: str, **fields: Any) -> dict[str, Any]:
    """A record dict with every schema field present and status ``kept``."""
    rec: dict[str, Any] = dict.fromkeys(SAMPLE_SCHEMA.names)
    rec.update(
        id="",
        source=source,
        locator=locator,
        media=[],
        modalities=[],
        tasks=[],
        buckets=[],
        scores={},
        lineage=[],
        status=Status.KEPT.value,
    )
    unknown = set(fields) - set(SAMPLE_SCHEMA.names)
    if unknown:
        raise KeyError(f"unknown record fields: {sorted(unknown)}")
    rec.update(fields)
    if isinstance(rec.get("meta"), dict):
        rec["meta"] = json.dumps(rec["meta"], sort_keys=True, ensure_ascii=False, default=str) if rec["meta"] else None
    return rec


def derive(parent: dict[str, Any], *, suffix: str, **changes: Any) -> dict[str, Any]:
    """A new kept record derived from ``parent`` (a clip of a video, a segment of a recording).

    It keeps the parent's fields and lineage unless ``changes`` says otherwise, records
    ``parent_id``, gets the locator ``<parent locator>#<suffix>``, and a fresh content hash and id.
    """
    import copy

    child = copy.deepcopy(parent)
    unknown = set(changes) - set(SAMPLE_SCHEMA.names)
    if unknown:
        raise KeyError(f"unknown record fields: {sorted(unknown)}")
    child.update(changes)
    child.update(
        parent_id=parent["id"],
        locator=f"{parent['locator']}#{suffix}",
        status=Status.KEPT.value,
        status_operator=None,
        status_reason=None,
        status_detail=None,
        duplicate_of=None,
    )
    child["content_hash"] = content_hash(child)
    child["id"] = record_id(child["content_hash"], child["source"], child["locator"])
    return child


def normalise_text(text: str) -> str:
    """Case-folded, whitespace-collapsed text used for text content hashes."""
    return " ".join(text.casefold().split())


# Layouts where the media is the sample and the text only describes it: two rows with the same
# media bytes are one sample (keep one image, not two copies with different captions).
_MEDIA_KEYED_LAYOUTS = frozenset({"image", "video", "audio", "image-text", "multi-image-text", "video-text", "audio-text"})
# Fields that make a row more than a description of its media: a conversation, an instruction, a
# preference or a trajectory about an image is its own sample even when another row shows the same image.
_TASK_FIELDS = ("conversation", "instruction", "response", "preference", "interaction")


def content_hash(rec: dict[str, Any]) -> str:
    """Exact-duplicate key.

    Paired media rows (image, image-text, video-text, audio-text, ...): the media bytes' hashes,
    so two rows with the same bytes are duplicates even if their captions differ. Everything else
    (text, documents, conversations, preference pairs, trajectories): the normalised text and
    structure together with the media hashes, so a document is a duplicate only of the same
    document, never of one of its images, and two conversations about one image are both kept.
    """
    h = hashlib.sha256()
    media_hashes = [m.get("sha256") or "" for m in rec.get("media") or []]
    media_keyed = rec.get("layout") in _MEDIA_KEYED_LAYOUTS and not any(rec.get(k) for k in _TASK_FIELDS)
    if media_keyed and media_hashes and all(media_hashes):
        h.update(b"media\0")
        for mh in media_hashes:
            h.update(mh.encode())
            h.update(b"\0")
        return h.hexdigest()
    h.update(b"text\0" + (rec.get("layout") or "").encode() + b"\0")
    for name in TEXT_FIELDS:
        if rec.get(name):
            h.update(name.encode() + b"=" + normalise_text(rec[name]).encode() + b"\0")
    for turn in rec.get("conversation") or []:
        h.update(f"{turn.get('role')}:{normalise_text(turn.get('text') or '')}\0".encode())
    for seg in rec.get("interleaved") or []:
        if seg.get("kind") == "text":
            h.update(normalise_text(seg.get("text") or "").encode() + b"\0")
    for key in ("preference", "interaction"):
        if rec.get(key):
            h.update(json.dumps(rec[key], sort_keys=True, default=str).encode())
    h.update(json.dumps(media_hashes).encode())
    return h.hexdigest()


def record_id(content: str, source: str, locator: str) -> str:
    """Stable 24-hex id from content and origin; contains no dot, so it is a valid shard key."""
    return hashlib.sha256(f"{content}\0{source}\0{locator}".encode()).hexdigest()[:24]


def to_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Python record dicts -> Arrow table cast to SAMPLE_SCHEMA."""
    fixed = []
    for r in rows:
        if isinstance(r.get("scores"), dict):
            r = {**r, "scores": list(r["scores"].items())}
        fixed.append(r)
    return pa.Table.from_pylist(fixed, schema=SAMPLE_SCHEMA)


def from_table(table: pa.Table) -> list[dict[str, Any]]:
    """Arrow table -> Python record dicts (scores as a dict)."""
    rows = table.to_pylist()
    for r in rows:
        s = r.get("scores")
        r["scores"] = dict(s) if s else {}
    return rows
