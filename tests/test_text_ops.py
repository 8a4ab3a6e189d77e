"""text_clean and text_quality on inline strings."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from operators.registry import OPERATORS
from operators.text.clean import TextClean
from operators.text.quality import TextQuality, repetition_scores, text_scores
from schemas.enums import Status
from schemas.record import from_table, new_record, to_table


def clean(params: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    row = new_record(source="t", locator="x", layout="image-text", **fields)
    return from_table(TextClean(params or {})(to_table([row])))[0]


def quality(params: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    fields.setdefault("layout", "text")
    row = new_record(source="t", locator="x", **fields)
    return from_table(TextQuality(params or {})(to_table([row])))[0]


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("A  dog\t runs \n on the beach ", "A dog runs on the beach"),
        ("Fish &amp; chips &quot;fresh&quot; &#8211; caf&eacute;", 'Fish & chips "fresh" – café'),
        ("Fish &amp;amp; chips", "Fish & chips"),  # double-escaped
        ("<p>A <b>bold</b> cat</p><br/>on a mat<!-- tracking -->.", "A bold cat on a mat."),
        ("if a < b and c > d", "if a < b and c > d"),  # not tags
        ("Sunset over the bay https://example.com/p?id=1 and www.foo.org/x", "Sunset over the bay and"),
        ("Young woman with a laptop - Stock Photo | Shutterstock", "Young woman with a laptop"),
        ("Image may contain: 2 people, smiling, outdoor", "2 people, smiling, outdoor"),
        ("Sunset (royalty-free stock image) [Getty Images]", "Sunset"),
        ("A red bicycle. Click here to subscribe!", "A red bicycle."),
        ("Mail me at joe@example.com , please !", "Mail me at, please!"),
        ("Stockholm photo", "Stockholm photo"),  # whole words only: 'stock' phrases do not eat 'Stockholm'
        ("zero\u200bwidth\u00a0space", "zerowidth space"),
    ],
)
def test_clean_exact_outputs(raw: str, expected: str) -> None:
    out = clean(caption=raw)
    assert out["caption"] == expected
    s = out["scores"]
    assert (s["text_chars_clean"], s["removed_chars"]) == (len(expected), len(raw) - len(expected))
    meta = json.loads(out["meta"]) if out["meta"] else {}
    assert meta.get("original_caption") == (raw if raw != expected else None)


def test_clean_fields_conversation_and_multiline() -> None:
    out = clean(
        {"fields": ["caption", "text"], "conversation": True},
        caption="Shutterstock",
        alt_text="left &amp; alone",
        text="Title\n\n\n\npara  one &amp; two\nline <i>x</i>\n",
        conversation=[{"role": "user", "text": "What is <b>this</b>?"}, {"role": "assistant", "text": "A cat."}],
    )
    assert out["caption"] is None  # cleaned down to nothing
    assert out["alt_text"] == "left &amp; alone"  # not in fields
    assert out["text"] == "Title\n\npara one & two\nline x"  # multiline keeps its breaks
    assert out["conversation"] == [{"role": "user", "text": "What is this?"}, {"role": "assistant", "text": "A cat."}]
    meta = json.loads(out["meta"])
    assert meta["original_caption"] == "Shutterstock"
    assert meta["original_conversation"][0]["text"] == "What is <b>this</b>?"
    assert set(meta) == {"original_caption", "original_text", "original_conversation"}


def test_clean_params_and_unchanged_rows() -> None:
    out = clean({"boilerplate": [], "extra_boilerplate": ["via flickr"], "remove_urls": False},
                caption="Bridge via Flickr https://x.y/z")  # fmt: skip
    assert out["caption"] == "Bridge https://x.y/z"
    untouched = clean(caption="A clean caption.")
    assert untouched["meta"] is None and untouched["scores"]["removed_chars"] == 0.0
    assert OPERATORS["text_clean"] is TextClean
    with pytest.raises(ValidationError):
        TextClean({"fieldz": ["caption"]})
    with pytest.raises(ValueError, match="unknown text field"):
        TextClean({"fields": ["captions"]}).validate_setup()


def test_lingua_tells_english_from_german() -> None:
    en = quality(text="The train to the airport leaves from platform four every twenty minutes.")
    de = quality(text="Der Zug zum Flughafen fährt alle zwanzig Minuten von Gleis vier ab.")
    assert (en["language"], de["language"]) == ("en", "de")
    assert en["scores"]["lang_confidence"] > 0.9 and de["scores"]["lang_confidence"] > 0.9
    restricted = {"languages": ["en", "de"]}
    assert quality(restricted, caption="Guten Morgen und herzlich willkommen.", layout="image-text")["language"] == "de"


def test_language_declared_values_and_short_texts() -> None:
    out = quality(text="Der Zug zum Flughafen fährt alle zwanzig Minuten von Gleis vier ab.", language="en")
    assert out["language"] == "de" and json.loads(out["meta"])["declared_language"] == "en"
    kept = quality({"overwrite": False}, text="Der Zug zum Flughafen fährt alle zwanzig Minuten ab.", language="en")
    assert kept["language"] == "en"
    short = quality(text="ok 42")
    assert short["language"] is None and short["scores"]["lang_confidence"] == 0.0
    with pytest.raises(Exception, match="unknown language code"):
        TextQuality({"languages": ["en", "xx"]}).validate_setup()


def test_detector_is_built_once_per_process() -> None:
    a, b = TextQuality({"languages": ["en", "fr"]}), TextQuality({"languages": ["fr", "en"]})
    assert a.detector() is b.detector()
    assert TextQuality({}).detector() is not a.detector()


def test_counts_and_alpha_ratio() -> None:
    s = text_scores("Hello world 123!")
    assert (s["char_count"], s["word_count"]) == (16.0, 3.0)
    assert s["alpha_ratio"] == pytest.approx(10 / 14)
    assert s["alpha_word_frac"] == pytest.approx(2 / 3)
    assert s["mean_word_len"] == pytest.approx(14 / 3)


def test_repetition_scores() -> None:
    clean_text = "the quick brown fox jumps over the lazy dog"
    s = repetition_scores(clean_text)
    assert s["dup_line_frac"] == 0.0 and s["dup_5gram_frac"] == 0.0
    assert s["top_2gram_frac"] == 0.0  # no 2-gram repeats
    assert s["top_3gram_frac"] == 0.0

    lines = "buy now\nbuy now\nbuy now\nfresh bread daily"
    s = repetition_scores(lines)
    assert s["dup_line_frac"] == pytest.approx(2 / 4)
    assert s["dup_line_char_frac"] == pytest.approx(14 / (21 + 17))
    # words: buy now x3, fresh bread daily; chars = 6*3 + 15 = 33; "buy now" covers 3 * 6
    assert s["top_2gram_frac"] == pytest.approx(18 / 33)

    spam = " ".join(["one two three four five"] * 4)
    s = repetition_scores(spam)
    # 20 words of 3-5 letters (19 chars per 5-gram); the first 5-gram is new, then the scan meets
    # 5-grams seen before: positions 5..19 are three repeated 5-grams = 3 * 19 of 76 characters
    assert s["dup_5gram_frac"] == pytest.approx(57 / 76)
    assert s["dup_10gram_frac"] == pytest.approx(38 / 76)
    assert repetition_scores("")["top_2gram_frac"] == 0.0


def test_quality_scores_on_a_row_and_filters_can_use_them() -> None:
    out = quality(transcript="Thank you. Thank you. Thank you.", caption="Applause", layout="audio-text",
                  conversation=[{"role": "user", "text": "more"}])  # fmt: skip
    s = out["scores"]
    assert out["status"] == Status.KEPT
    assert s["word_count"] == 8.0  # caption + transcript + turn
    assert s["top_2gram_frac"] > 0.5
    from operators.filter import Filter

    f = Filter({"rules": [{"field": "top_2gram_frac", "max": 0.2}]})
    assert from_table(f(to_table([out])))[0]["status"] == Status.DROPPED
