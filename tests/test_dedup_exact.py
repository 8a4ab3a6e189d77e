"""Exact dedup's grouping and survivor policies, without Ray (the engine test covers Ray)."""

from __future__ import annotations

from operators.dedup.exact import ExactDedup
from schemas.record import content_hash, from_table, new_media, new_record, to_table


def img(locator, sha, seq, **scores):
    r = new_record(source="s", locator=locator, layout="image", media=[new_media("image", locator, sha256=sha)], seq=seq, scores=scores)
    r["content_hash"] = content_hash(r)
    r["id"] = f"id-{locator}"
    return r


def resolve(op, rows):
    """summarize -> decide -> apply in one process, as the engine does across workers."""
    table = to_table(rows)
    return from_table(op.apply(table, op.decide(op.summarize(table))))


def test_first_seen_survives_and_duplicates_point_to_it():
    out = resolve(ExactDedup(), [img("b", "h1", 2), img("a", "h1", 1), img("c", "h2", 3)])
    by = {r["locator"]: r for r in out}
    assert by["a"]["status"] == "kept" and by["a"]["scores"]["dup_count"] == 2
    assert (by["b"]["status"], by["b"]["status_reason"], by["b"]["duplicate_of"]) == ("duplicate", "exact_duplicate", "id-a")
    assert by["c"]["status"] == "kept" and by["c"]["scores"]["dup_count"] == 1


def test_highest_resolution_policy():
    out = resolve(ExactDedup({"policy": "highest_resolution"}), [img("a", "h", 1, pixels=10), img("b", "h", 2, pixels=99)])
    assert {r["locator"]: r["status"] for r in out} == {"a": "duplicate", "b": "kept"}
    best = ExactDedup({"policy": "best_score", "score_key": "aesthetic"})
    out = resolve(best, [img("a", "h", 1, aesthetic=9.0), img("b", "h", 2, aesthetic=5.0), img("c", "h", 3)])
    assert {r["locator"]: r["status"] for r in out} == {"a": "kept", "b": "duplicate", "c": "duplicate"}
    assert {r["duplicate_of"] for r in out if r["status"] == "duplicate"} == {"id-a"}


def test_decisions_only_for_duplicate_groups():
    op = ExactDedup()
    summary = op.summarize(to_table([img("a", "h1", 1), img("b", "h2", 2), img("c", "h1", 3), img("d", "h1", 0)]))
    decisions = op.decide(summary).to_pylist()
    assert sorted((d["id"], d["duplicate_of"], d["group_size"]) for d in decisions) == [
        ("id-a", "id-d", 3),
        ("id-c", "id-d", 3),
        ("id-d", None, 3),
    ]


def test_non_kept_rows_never_group():
    bad = img("q", "h", 0)
    bad["status"] = "quarantined"
    out = resolve(ExactDedup(), [bad, img("a", "h", 1)])
    assert {r["locator"]: r["status"] for r in out} == {"q": "quarantined", "a": "kept"}


def test_text_rows_dedup_on_normalised_text():
    a = new_record(source="s", locator="t1", layout="text", text="Hello   World")
    b = new_record(source="s", locator="t2", layout="text", text="hello world")
    c = new_record(source="s", locator="t3", layout="text", text="hello there")
    assert content_hash(a) == content_hash(b) != content_hash(c)
    media_a = img("x", "same", 1)
    media_b = img("y", "same", 2)
    media_b["caption"] = "another caption"
    assert content_hash(media_a) == content_hash(media_b)  # same bytes: duplicates whatever the caption


def test_documents_and_conversations_are_not_duplicates_of_their_images():
    image = img("x", "same", 1)
    doc = new_record(
        source="s", locator="page.html", layout="interleaved", media=[new_media("image", "x", sha256="same")],
        interleaved=[{"kind": "text", "text": "A diagram:"}, {"kind": "media", "media_index": 0}],
    )  # fmt: skip
    copy = new_record(
        source="s", locator="mirror/page.html", layout="interleaved", media=[new_media("image", "x2", sha256="same")],
        interleaved=[{"kind": "text", "text": "a   DIAGRAM:"}, {"kind": "media", "media_index": 0}],
    )  # fmt: skip
    other_page = new_record(
        source="s", locator="other.html", layout="interleaved", media=[new_media("image", "x", sha256="same")],
        interleaved=[{"kind": "text", "text": "Another page quoting the diagram."}, {"kind": "media", "media_index": 0}],
    )  # fmt: skip
    assert content_hash(doc) == content_hash(copy)  # the same page twice
    assert len({content_hash(image), content_hash(doc), content_hash(other_page)}) == 3

    def chat(question: str) -> dict:
        return new_record(
            source="llava", locator=question, layout="image-text", media=[new_media("image", "coco.jpg", sha256="same")],
            conversation=[{"role": "user", "text": question}, {"role": "assistant", "text": "A cat."}],
        )  # fmt: skip

    # LLaVA asks several questions about one image: each conversation is its own sample
    assert content_hash(chat("What is this?")) != content_hash(chat("Describe the image.")) != content_hash(image)
    assert content_hash(chat("What is this?")) == content_hash(chat("what is   this?"))
