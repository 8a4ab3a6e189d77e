"""``text_quality``: language identification, size, repetition and character statistics of text.

The texts of a row (the fields in ``fields``, then conversation turns) are joined by newlines and
measured; nothing is dropped here: filters threshold the scores ("score now, threshold later").

Language: lingua (``lingua-language-detector``, models shipped in the wheel, offline). The
detector is built once per worker process and cached on the class, keyed by its languages and
mode: ``languages`` (ISO 639-1 codes) restricts it (faster and more accurate when the corpus is
known to be, say, English and German); empty means all 75 languages, in low-accuracy mode by
default (``low_accuracy``: trigram models only, ~10x faster, fine above a sentence). Detection reads
the first ``max_detect_chars`` characters. When the best language's confidence reaches
``min_confidence`` it becomes ``row["language"]`` (ISO 639-1); a different declared value (from a
sidecar, ``<html lang>``) is kept in ``meta["declared_language"]``, unless ``overwrite: false``
keeps declared values. ``lang_confidence`` is lingua's confidence in [0, 1] (0 when there is too
little text: fewer than ``min_detect_letters`` letters).

Repetition (after Gopher, Rae et al. 2021, Table A1), over lower-cased words with surrounding
punctuation stripped, as fractions of the characters of all words:
``dup_line_frac`` / ``dup_line_char_frac`` (lines equal to an earlier line, by count / by
characters), ``top_{2,3,4}gram_frac`` (characters covered by the most frequent n-gram; 0 when no
n-gram repeats, so short captions are not penalised for being short) and ``dup_{5..10}gram_frac``
(characters in n-grams that repeat an earlier one, non-overlapping). Gopher's document thresholds:
top 2/3/4-gram <= 0.20/0.18/0.16, dup 5..10-gram <= 0.15..0.10, dup lines <= 0.30.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, ClassVar

from pydantic import Field

from operators.audio.transcode import load_meta, store_meta
from operators.base import OperatorError, Params, RowOperator
from operators.registry import register_operator

__all__ = ["TextQuality", "TextQualityParams", "repetition_scores", "text_scores"]

TOP_NGRAMS = (2, 3, 4)
DUP_NGRAMS = (5, 6, 7, 8, 9, 10)
_STRIP = re.compile(r"^\W+|\W+$")


def _words(text: str) -> list[str]:
    out = []
    for w in text.lower().split():
        w = _STRIP.sub("", w)
        if w:
            out.append(w)
    return out


def _dup_chars(items: list[str]) -> tuple[int, int]:
    """(number of items equal to an earlier one, their characters)."""
    seen: set[str] = set()
    count = chars = 0
    for x in items:
        if x in seen:
            count += 1
            chars += len(x)
        else:
            seen.add(x)
    return count, chars


def repetition_scores(text: str) -> dict[str, float]:
    """Gopher-style repetition fractions of ``text`` (see the module docstring)."""
    lines = [ln.strip() for ln in text.split("\n") if ln.strip()]
    line_dups, line_dup_chars = _dup_chars(lines)
    line_chars = sum(len(ln) for ln in lines)
    scores = {
        "dup_line_frac": line_dups / len(lines) if lines else 0.0,
        "dup_line_char_frac": line_dup_chars / line_chars if line_chars else 0.0,
    }
    words = _words(text)
    total = sum(len(w) for w in words)
    for n in TOP_NGRAMS:
        grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
        frac = 0.0
        if grams and total:
            gram, count = grams.most_common(1)[0]
            if count > 1:
                frac = min(1.0, count * sum(len(w) for w in gram) / total)
        scores[f"top_{n}gram_frac"] = frac
    for n in DUP_NGRAMS:
        seen: set[tuple[str, ...]] = set()
        repeated = 0
        i = 0
        while i < len(words) - n + 1:
            gram = tuple(words[i : i + n])
            if gram in seen:
                repeated += sum(len(w) for w in gram)
                i += n
            else:
                seen.add(gram)
                i += 1
        scores[f"dup_{n}gram_frac"] = repeated / total if total else 0.0
    return scores


def text_scores(text: str) -> dict[str, float]:
    """Sizes and character statistics of ``text``, plus ``repetition_scores``."""
    words = text.split()
    visible = sum(1 for c in text if not c.isspace())
    letters = sum(1 for c in text if c.isalpha())
    scores = {
        "char_count": float(len(text)),
        "word_count": float(len(words)),
        "alpha_ratio": letters / visible if visible else 0.0,
        "alpha_word_frac": sum(1 for w in words if any(c.isalpha() for c in w)) / len(words) if words else 0.0,
        "mean_word_len": sum(len(w) for w in words) / len(words) if words else 0.0,
    }
    scores.update(repetition_scores(text))
    return scores


class TextQualityParams(Params):
    fields: list[str] = Field(
        default_factory=lambda: ["text", "caption", "alt_text", "transcript", "instruction", "response"],
        description="text fields measured together (joined by newlines)",
    )
    conversation: bool = Field(True, description="include the text of conversation turns")
    languages: list[str] = Field(
        default_factory=list, description="ISO 639-1 codes the detector chooses from (e.g. [en, de]); empty: all 75"
    )
    low_accuracy: bool | None = Field(
        None, description="lingua low-accuracy mode (faster); null: on when `languages` is empty, off otherwise"
    )
    min_confidence: float = Field(0.5, ge=0, le=1, description="set row.language only when lingua is at least this confident")
    overwrite: bool = Field(True, description="replace a declared language (kept in meta.declared_language) by the detected one")
    max_detect_chars: int = Field(2000, ge=20, description="detect the language on the first this-many characters")
    min_detect_letters: int = Field(10, ge=1, description="texts with fewer letters get no language (lang_confidence 0)")


@register_operator
class TextQuality(RowOperator[TextQualityParams]):
    """Detect the language (lingua) and measure size, repetition (Gopher) and alphabetic ratio of text."""

    name: ClassVar[str] = "text_quality"
    default_batch_size: ClassVar[int] = 512
    requires: ClassVar[tuple[tuple[str, str], ...]] = (("lingua", "lingua-language-detector>=2.0"),)
    writes: ClassVar[dict[str, str]] = {
        "lang_confidence": "lingua's confidence in the detected language, 0..1 (0: too little text)",
        "char_count": "characters of the measured text",
        "word_count": "whitespace-separated words of the measured text",
        "alpha_ratio": "alphabetic characters / non-whitespace characters",
        "alpha_word_frac": "fraction of words with at least one alphabetic character (Gopher: >= 0.8)",
        "mean_word_len": "mean word length in characters",
        "dup_line_frac": "fraction of non-empty lines equal to an earlier line",
        "dup_line_char_frac": "characters in duplicate lines / characters in lines",
        **{f"top_{n}gram_frac": f"characters covered by the most frequent word {n}-gram (0 if none repeats)" for n in TOP_NGRAMS},
        **{f"dup_{n}gram_frac": f"characters in word {n}-grams repeating an earlier one" for n in DUP_NGRAMS},
    }

    #: lingua detectors built in this process, by (languages, low_accuracy)
    _detectors: ClassVar[dict[tuple[tuple[str, ...], bool], Any]] = {}

    def validate_setup(self) -> None:
        self._languages()

    def _languages(self) -> list[Any]:
        from lingua import IsoCode639_1, Language

        out = []
        for code in self.params.languages:
            try:
                out.append(Language.from_iso_code_639_1(IsoCode639_1.from_str(code.lower())))
            except (ValueError, AttributeError):
                known = sorted(lang.iso_code_639_1.name.lower() for lang in Language.all())
                raise OperatorError(f"text_quality: unknown language code {code!r}; lingua knows {known}") from None
        return out

    def detector(self) -> Any:
        """This process's lingua detector for the params (built on first use, then cached)."""
        from lingua import LanguageDetectorBuilder

        p = self.params
        low = p.low_accuracy if p.low_accuracy is not None else not p.languages
        key = (tuple(sorted(c.lower() for c in p.languages)), low)
        det = self._detectors.get(key)
        if det is None:
            langs = self._languages()
            if len(langs) == 1:
                raise OperatorError("text_quality: `languages` needs at least two languages to choose from")
            builder = LanguageDetectorBuilder.from_languages(*langs) if langs else LanguageDetectorBuilder.from_all_languages()
            if low:
                builder = builder.with_low_accuracy_mode()
            det = self._detectors[key] = builder.build()
        return det

    def detect(self, text: str) -> tuple[str | None, float]:
        """(ISO 639-1 code or None, confidence) of ``text``."""
        p = self.params
        sample = text[: p.max_detect_chars]
        if sum(1 for c in sample if c.isalpha()) < p.min_detect_letters:
            return None, 0.0
        values = self.detector().compute_language_confidence_values(sample)
        if not values or values[0].value <= 0:
            return None, 0.0
        best = values[0]
        return best.language.iso_code_639_1.name.lower(), float(best.value)

    def _text(self, row: dict[str, Any]) -> str:
        p = self.params
        parts = [row[f] for f in p.fields if isinstance(row.get(f), str) and row[f].strip()]
        if p.conversation:
            parts.extend(t["text"] for t in row.get("conversation") or [] if t and t.get("text"))
        return "\n".join(parts)

    def process(self, row: dict[str, Any]) -> None:
        p = self.params
        text = self._text(row)
        scores = text_scores(text)
        code, confidence = self.detect(text) if text else (None, 0.0)
        scores["lang_confidence"] = confidence
        if code is not None and confidence >= p.min_confidence:
            declared = row.get("language")
            if not declared:
                row["language"] = code
            elif declared.split("-")[0].lower() != code and p.overwrite:
                meta = load_meta(row)
                meta.setdefault("declared_language", declared)
                store_meta(row, meta)
                row["language"] = code
        row["scores"] = {**(row.get("scores") or {}), **scores}
