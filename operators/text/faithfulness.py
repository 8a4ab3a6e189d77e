"""Is an LLM rewrite faithful to its original? The checks ``caption_rewrite`` runs on every rewrite,
and the reason (a ``Rejection``) it gives when one fails: see ``operators.text.caption_rewrite``."""

from __future__ import annotations

import importlib.util
import logging
import re
import threading
from enum import StrEnum
from typing import Any

__all__ = ["DEFAULT_CHATTY", "LanguageDetector", "Rejection", "check_rewrite", "entities", "entity_ratio"]

log = logging.getLogger(__name__)


class Rejection(StrEnum):
    """Why a rewrite was not kept (written to ``meta["rewrite_rejected"][field]``)."""

    EMPTY = "empty"
    CHATTY = "chatty"
    TOO_LONG = "too_long"
    WRONG_LANGUAGE = "wrong_language"
    ADDED_NUMBERS = "added_numbers"
    DROPPED_ENTITIES = "dropped_entities"
    LLM_ERROR = "llm_error"


DEFAULT_CHATTY = [
    r"^\W*(sure|certainly|of course|absolutely|okay|ok|great|here)\b",
    r"\bhere(?:'s| is| are)\b.{0,40}\b(caption|rewrite|rewritten|version|translation|description|sentence)",
    r"\bas an ai\b",
    r"\b(language model|i'm sorry|i am sorry|i apologi[sz]e|i cannot|i can't|i can not|i'm unable|i am unable)\b",
    r"^\W*(original|rewritten|caption|translation)\s*:",
    r"\b(i hope this helps|let me know|feel free to)\b",
]

_URLISH = re.compile(r"https?://\S+|www\.\S+|[#@]\w+|\S+\.(?:jpe?g|png|gif|webp|mp4|mov|wav|mp3)\b|\S*_\S*", re.I)
_NUMBER = re.compile(r"\d+(?:[.,:/]\d+)*")
_WORD = re.compile(r"[^\W\d_][\w'’-]*")


def entities(text: str) -> set[str]:
    """Names and numbers of a text: capitalised words that do not start a sentence (plus all-caps
    words anywhere), and numbers; file names, URLs, hashtags and handles are ignored."""
    clean = _URLISH.sub(" ", text)
    out = {n.replace(",", "") for n in _NUMBER.findall(clean)}
    for sentence in re.split(r"(?<=[.!?:;])\s+|\n+", clean):
        words = _WORD.findall(sentence)
        for i, w in enumerate(words):
            if len(w) < 2:
                continue
            if w.isupper() or (w[0].isupper() and i > 0):
                out.add(w.lower())
    return out


def entity_ratio(original: str, rewrite: str) -> float:
    want = entities(original)
    if not want:
        return 1.0
    low = rewrite.lower().replace(",", "")
    return sum(1 for e in want if e in low) / len(want)


class LanguageDetector:
    """lingua-language-detector, when installed (lazily built, once per process)."""

    _detector: Any = None
    _lock = threading.Lock()
    _noted = False

    @classmethod
    def available(cls) -> bool:
        ok = importlib.util.find_spec("lingua") is not None
        if not ok and not cls._noted:
            cls._noted = True
            log.warning("caption_rewrite: lingua-language-detector is not installed; the wrong_language check is skipped")
        return ok

    @classmethod
    def parse(cls, name: str) -> Any:
        from lingua import Language

        n = name.strip()
        for lang in Language.all():
            if n.upper() in (lang.name, lang.iso_code_639_1.name, lang.iso_code_639_3.name):
                return lang
        raise ValueError(f"unknown language '{name}' (an English name like French, or an ISO code like fr)")

    @classmethod
    def _get(cls, languages: tuple[str, ...]) -> Any:
        from lingua import LanguageDetectorBuilder

        with cls._lock:
            if cls._detector is None or cls._detector[0] != languages:
                langs = [cls.parse(x) for x in languages]
                cls._detector = (languages, LanguageDetectorBuilder.from_languages(*langs).build())
            return cls._detector[1]

    @classmethod
    def detect(cls, text: str, languages: tuple[str, ...], min_confidence: float = 0.0) -> Any:
        """The most likely language of ``text``, or None when its confidence is under ``min_confidence``."""
        values = cls._get(languages).compute_language_confidence_values(text)
        if not values or values[0].value < min_confidence:
            return None
        return values[0].language

    @classmethod
    def confidence(cls, text: str, language: Any, languages: tuple[str, ...]) -> float:
        return float(cls._get(languages).compute_language_confidence(text, language))


def check_rewrite(
    original: str,
    output: str | None,
    *,
    max_length_ratio: float,
    length_slack_chars: int = 20,
    min_entity_ratio: float,
    chatty: list[re.Pattern[str]],
    expected_language: Any = None,
    languages: tuple[str, ...] = (),
    min_words_for_language: int = 4,
    min_language_confidence: float = 0.15,
    reject_added_numbers: bool = True,
) -> tuple[str | None, Rejection | None]:
    """(cleaned rewrite, None) when the output is faithful, else (None, reason)."""
    text = (output or "").strip().strip('"“”').strip()
    if not re.search(r"\w", text):
        return None, Rejection.EMPTY
    if any(p.search(text) for p in chatty):
        return None, Rejection.CHATTY
    if len(text) > max_length_ratio * len(original) + length_slack_chars:
        return None, Rejection.TOO_LONG
    judge = expected_language is not None and languages and len(text.split()) >= min_words_for_language
    if judge and LanguageDetector.confidence(text, expected_language, languages) < min_language_confidence:
        return None, Rejection.WRONG_LANGUAGE
    if reject_added_numbers:
        have = {n.replace(",", "") for n in _NUMBER.findall(original)}
        if any(n.replace(",", "") not in have for n in _NUMBER.findall(text)):
            return None, Rejection.ADDED_NUMBERS
    if entity_ratio(original, text) < min_entity_ratio:
        return None, Rejection.DROPPED_ENTITIES
    return text, None
