"""Closed vocabularies shared by every part: modality, layout, bucket, task, status."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Bucket", "Layout", "Modality", "Status", "Task", "ReasonCode"]


class Modality(StrEnum):
    TEXT = "text"
    IMAGE = "image"
    VIDEO = "video"
    AUDIO = "audio"


class Layout(StrEnum):
    """How the modalities of one sample are arranged (the mixer groups by this)."""

    TEXT = "text"
    IMAGE = "image"
    VIDEO = "video"
    AUDIO = "audio"
    IMAGE_TEXT = "image-text"
    MULTI_IMAGE_TEXT = "multi-image-text"
    VIDEO_TEXT = "video-text"
    AUDIO_TEXT = "audio-text"
    INTERLEAVED = "interleaved"
    PREFERENCE = "preference"
    TRAJECTORY = "trajectory"


class Bucket(StrEnum):
    UNDERSTANDING = "understanding"
    GENERATION = "generation"
    INTERACTION = "interaction"
    PREFERENCE = "preference"


class Task(StrEnum):
    # understanding
    CAPTIONING = "captioning"
    VQA = "vqa"
    OCR = "ocr"
    GROUNDING = "grounding"
    MULTI_IMAGE = "multi_image"
    INTERLEAVED_UNDERSTANDING = "interleaved_understanding"
    VIDEO_CAPTIONING = "video_captioning"
    VIDEO_QA = "video_qa"
    ASR = "asr"
    AUDIO_CAPTIONING = "audio_captioning"
    TEXT = "text"
    # generation
    TEXT_TO_IMAGE = "text_to_image"
    IMAGE_EDITING = "image_editing"
    INTERLEAVED_GENERATION = "interleaved_generation"
    TEXT_TO_VIDEO = "text_to_video"
    IMAGE_TO_VIDEO = "image_to_video"
    TTS = "tts"
    TEXT_TO_AUDIO = "text_to_audio"
    # interaction
    WEB_NAVIGATION = "web_navigation"
    GUI_CONTROL = "gui_control"
    TOOL_USE = "tool_use"
    EMBODIED = "embodied"
    # preference
    PREFERENCE_PAIR = "preference_pair"
    RANKING = "ranking"
    REWARD = "reward"


class Status(StrEnum):
    KEPT = "kept"
    DROPPED = "dropped"
    DUPLICATE = "duplicate"
    QUARANTINED = "quarantined"
    #: replaced by rows derived from it (clips of a video); they carry ``parent_id``
    SPLIT = "split"


class ReasonCode(StrEnum):
    """Why a row is not kept. Every non-kept row carries exactly one of these."""

    # quarantine: the input itself is broken
    MISSING_FILE = "missing_file"
    UNREADABLE = "unreadable"
    #: opened, but not decodable
    CORRUPT_MEDIA = "corrupt_media"
    #: a media file of zero bytes
    EMPTY_FILE = "empty_file"
    #: the content (sniffed from its first bytes) is another kind of file than its name says (a PNG named .mp4)
    WRONG_TYPE = "wrong_type"
    #: the end of the file is missing: its own structure or its header's duration promises more than the data holds
    TRUNCATED = "truncated"
    UNSUPPORTED_FORMAT = "unsupported_format"
    BAD_MANIFEST_ROW = "bad_manifest_row"
    ORPHAN_SIDECAR = "orphan_sidecar"
    OPERATOR_ERROR = "operator_error"
    REMOTE_MEDIA = "remote_media"
    #: a media or sidecar path that resolves (after symlinks) outside the source's roots
    OUTSIDE_ROOT = "outside_root"
    #: a URL whose scheme is not in the source's ``allow_schemes``
    SCHEME_NOT_ALLOWED = "scheme_not_allowed"
    #: text that is not valid Unicode (a lone surrogate in JSON, a file name that is not UTF-8)
    INVALID_TEXT = "invalid_text"
    # drop: a measured value failed a rule
    BELOW_MIN = "below_min"
    ABOVE_MAX = "above_max"
    NOT_IN_SET = "not_in_set"
    MISSING_VALUE = "missing_value"
    NO_MATCHING_ROUTE = "no_matching_route"
    EMPTY = "empty"
    #: an interleaved document none of whose images could be read (missing, unreadable, not downloaded)
    ALL_MEDIA_MISSING = "all_media_missing"
    # duplicate
    EXACT_DUPLICATE = "exact_duplicate"
    NEAR_DUPLICATE = "near_duplicate"
    SEMANTIC_DUPLICATE = "semantic_duplicate"
    # split
    SPLIT = "split"
