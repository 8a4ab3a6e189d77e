"""``text_clean``: normalise the text fields of a record (captions, alt texts, transcripts...).

Steps, in order, on every field named in ``fields`` (and on conversation turns with
``conversation: true``):

1. HTML entities unescaped (twice at most, for double-escaped ``&amp;amp;``) and Unicode NFC;
2. HTML tags and comments removed (``<p>``, ``</b>``, ``<br/>``, ``<!-- -->``; a lone ``<`` or
   ``a < b > c`` is not a tag and stays);
3. URLs (``http(s)://...``, ``www....``) and e-mail addresses removed;
4. boilerplate phrases removed, case-insensitively and on word boundaries (``boilerplate``; the
   defaults are stock-photo and web-page noise: "stock photo", "click here", "image may contain",
   "royalty free", "shutterstock"...); a hyphen or several spaces inside a phrase also match;
5. control and zero-width characters dropped; separators left dangling at either end
   (``- | : ,``) and empty brackets removed; spaces before punctuation removed;
6. whitespace normalised: one space between words; fields in ``multiline_fields`` (default
   ``text``) and conversation turns keep their line breaks (at most one blank line in a row).

A changed field keeps its original in ``meta["original_<field>"]`` (``original_conversation`` for
turns); a field that cleans down to nothing becomes null. Scores: ``text_chars_clean`` (characters
left over the cleaned fields) and ``removed_chars`` (characters removed from them).
"""

from __future__ import annotations

import html
import re
import unicodedata
from functools import cached_property
from typing import Any, ClassVar

from pydantic import Field

from operators.audio.transcode import load_meta, store_meta
from operators.base import Params, RowOperator
from operators.registry import register_operator

__all__ = ["DEFAULT_BOILERPLATE", "TextClean", "TextCleanParams", "clean_text"]

DEFAULT_BOILERPLATE: list[str] = [
    "stock photo", "stock photography", "stock image", "stock picture", "stock footage", "stock video",
    "royalty free", "royalty-free image", "click here to subscribe", "click here for more", "click here",
    "click to enlarge", "read more", "learn more", "subscribe to our channel",
    "image may contain", "photo may contain", "no description available", "shutterstock", "getty images",
    "istockphoto", "istock", "alamy", "dreamstime", "depositphotos", "123rf", "adobe stock",
    "all rights reserved", "subscribe now", "free download", "download now",
]  # fmt: skip

_TAG = re.compile(r"<!--.*?-->|</?[A-Za-z][A-Za-z0-9:-]*(?:\s[^<>]*)?/?>", re.S)
_URL = re.compile(r"(?:\b[a-z][a-z0-9+.-]*://|\bwww\.)[^\s<>\"')\]]+", re.I)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b")
_INVISIBLE = re.compile(r"[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f\u200b-\u200d\u2060\ufeff]")
_SEPARATORS = r"\s\-\u2013\u2014|:;,/\u00b7\u2022"
_LEAD = re.compile(rf"^[{_SEPARATORS}]+")
_TRAIL = re.compile(rf"[{_SEPARATORS}]+$")
_REPEATED_SEP = re.compile(r"(\s[\-\u2013\u2014|\u00b7\u2022])(?:\s*[\-\u2013\u2014|\u00b7\u2022])+(?=\s)")
_EMPTY_BRACKETS = re.compile(r"\(\s*\)|\[\s*\]|\{\s*\}|\"\s*\"|'\s*'")
_SPACE_BEFORE_PUNCT = re.compile(r"[ \t]+([,.;:!?)\]])")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u3000]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def _phrase_pattern(phrases: list[str]) -> re.Pattern[str] | None:
    parts = []
    for p in sorted({p.strip() for p in phrases if p.strip()}, key=len, reverse=True):
        words = [re.escape(w) for w in re.split(r"[\s-]+", p)]
        parts.append(r"[\s-]+".join(words))
    if not parts:
        return None
    return re.compile(r"(?<!\w)(?:" + "|".join(parts) + r")(?!\w)\s*[:!.]?", re.I)


def clean_text(
    text: str,
    *,
    boilerplate: re.Pattern[str] | None = None,
    urls: bool = True,
    emails: bool = True,
    tags: bool = True,
    multiline: bool = False,
) -> str:
    """One text through the cleaning steps of the module docstring."""
    for _ in range(2):
        unescaped = html.unescape(text)
        if unescaped == text:
            break
        text = unescaped
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    if tags:
        text = _TAG.sub(" ", text)
    if urls:
        text = _URL.sub(" ", text)
    if emails:
        text = _EMAIL.sub(" ", text)
    if boilerplate is not None:
        text = boilerplate.sub(" ", text)
    text = _INVISIBLE.sub("", text)
    lines = text.split("\n") if multiline else [text.replace("\n", " ")]
    out = []
    for line in lines:
        line = _SPACES.sub(" ", line)
        line = _EMPTY_BRACKETS.sub(" ", line)
        line = _REPEATED_SEP.sub(r"\1", line)
        line = _SPACE_BEFORE_PUNCT.sub(r"\1", line)
        line = _SPACES.sub(" ", line).strip()
        if not multiline:
            line = _TRAIL.sub("", _LEAD.sub("", line))
        out.append(line)
    text = "\n".join(out)
    if multiline:
        text = _BLANK_LINES.sub("\n\n", text).strip()
    return text


class TextCleanParams(Params):
    fields: list[str] = Field(
        default_factory=lambda: ["caption", "alt_text", "transcript"],
        description="text fields to clean (any of caption, alt_text, transcript, text, instruction, response)",
    )
    conversation: bool = Field(False, description="also clean the text of conversation turns")
    multiline_fields: list[str] = Field(
        default_factory=lambda: ["text"], description="fields that keep their line breaks (documents)"
    )
    boilerplate: list[str] = Field(
        default_factory=lambda: list(DEFAULT_BOILERPLATE),
        description="phrases removed wherever they occur (case-insensitive, whole words)",
    )
    extra_boilerplate: list[str] = Field(default_factory=list, description="phrases removed in addition to `boilerplate`")
    remove_urls: bool = Field(True, description="remove http(s)://... and www.... URLs")
    remove_emails: bool = Field(True, description="remove e-mail addresses")
    strip_tags: bool = Field(True, description="remove HTML tags and comments")


_ALLOWED_FIELDS = {"caption", "alt_text", "transcript", "text", "instruction", "response"}


@register_operator
class TextClean(RowOperator[TextCleanParams]):
    """Clean captions, alt texts and transcripts: entities, tags, URLs, boilerplate, whitespace."""

    name: ClassVar[str] = "text_clean"
    default_batch_size: ClassVar[int] = 1024
    writes: ClassVar[dict[str, str]] = {
        "text_chars_clean": "characters left in the cleaned fields (and turns) after cleaning",
        "removed_chars": "characters removed from them by cleaning",
    }

    def validate_setup(self) -> None:
        bad = sorted(set(self.params.fields) - _ALLOWED_FIELDS)
        if bad:
            raise ValueError(f"text_clean: unknown text field(s) {bad}; expected some of {sorted(_ALLOWED_FIELDS)}")

    @cached_property
    def _pattern(self) -> re.Pattern[str] | None:
        return _phrase_pattern([*self.params.boilerplate, *self.params.extra_boilerplate])

    def _clean(self, text: str, multiline: bool) -> str:
        p = self.params
        return clean_text(text, boilerplate=self._pattern, urls=p.remove_urls, emails=p.remove_emails,
                          tags=p.strip_tags, multiline=multiline)  # fmt: skip

    def process(self, row: dict[str, Any]) -> None:
        p = self.params
        before = after = 0
        originals: dict[str, Any] = {}
        for name in p.fields:
            value = row.get(name)
            if not value:
                continue
            cleaned = self._clean(value, name in p.multiline_fields)
            before, after = before + len(value), after + len(cleaned)
            if cleaned != value:
                originals[f"original_{name}"] = value
                row[name] = cleaned or None
        if p.conversation and row.get("conversation"):
            turns = row["conversation"]
            new_turns = []
            for turn in turns:
                text = (turn or {}).get("text")
                if not text:
                    new_turns.append(turn)
                    continue
                cleaned = self._clean(text, True)
                before, after = before + len(text), after + len(cleaned)
                new_turns.append({**turn, "text": cleaned or None})
            if new_turns != turns:
                originals["original_conversation"] = turns
                row["conversation"] = new_turns
        if originals:
            meta = load_meta(row)
            for key, value in originals.items():
                meta.setdefault(key, value)  # a second cleaning stage keeps the very first original
            store_meta(row, meta)
        row["scores"] = {**(row.get("scores") or {}), "text_chars_clean": float(after), "removed_chars": float(before - after)}
