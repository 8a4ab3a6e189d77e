"""Filter thresholds and routing rules on tiny inline records."""

from __future__ import annotations

from operators.filter import Filter
from operators.route import Route
from schemas.record import from_table, new_record, to_table


def rec(layout="image-text", **scores):
    return new_record(source="s", locator=f"x{len(scores)}", id="i", layout=layout, caption="a cat", scores=scores)


def run(op, rows):
    return from_table(op(to_table(rows)))


def test_filter_drops_with_exact_reason_and_detail():
    op = Filter({"rules": [{"field": "min_side", "min": 64}, {"field": "aspect_ratio", "min": 0.5, "max": 2}]})
    out = run(op, [rec(min_side=32, aspect_ratio=1), rec(min_side=100, aspect_ratio=3), rec(min_side=100, aspect_ratio=1)])
    assert [r["status"] for r in out] == ["dropped", "dropped", "kept"]
    assert (out[0]["status_operator"], out[0]["status_reason"], out[0]["status_detail"]) == ("filter", "below_min", "min_side=32 < 64")
    assert (out[1]["status_reason"], out[1]["status_detail"]) == ("above_max", "aspect_ratio=3 > 2")
    assert out[2]["lineage"] == ["filter"]


def test_filter_missing_value_policy_and_in_set():
    fail = Filter({"rules": [{"field": "duration_s", "min": 1}]})
    passing = Filter({"rules": [{"field": "duration_s", "min": 1, "missing": "pass"}]})
    assert run(fail, [rec()])[0]["status_reason"] == "missing_value"
    assert run(passing, [rec()])[0]["status"] == "kept"
    lang = Filter({"rules": [{"field": "source", "in": ["other"]}]})
    assert run(lang, [rec()])[0]["status_reason"] == "not_in_set"


def test_filter_when_limits_rows_and_skips_non_kept():
    op = Filter({"when": {"layout": "video-text"}, "rules": [{"field": "min_side", "min": 64}]})
    already = rec(min_side=1)
    already["status"] = "quarantined"
    out = run(op, [rec(min_side=1), rec("video-text", min_side=1), already])
    assert [r["status"] for r in out] == ["kept", "dropped", "quarantined"]
    assert out[2]["lineage"] == []  # an operator does not touch rows that are no longer kept


def test_route_one_row_many_buckets_and_unmatched_drop():
    op = Route(
        {
            "rules": [
                {"name": "cap", "when": {"layout": "image-text", "has": ["caption"]}, "tasks": ["captioning"], "buckets": ["understanding"]},
                {"name": "t2i", "when": {"layout": "image-text", "rules": [{"field": "min_side", "min": 256}]}, "tasks": ["text_to_image"], "buckets": ["generation"]},
            ]
        }
    )
    out = run(op, [rec(min_side=512), rec(min_side=100), rec("audio")])
    assert (out[0]["tasks"], out[0]["buckets"]) == (["captioning", "text_to_image"], ["understanding", "generation"])
    assert out[1]["buckets"] == ["understanding"]
    assert (out[2]["status"], out[2]["status_reason"]) == ("dropped", "no_matching_route")


def test_route_unmatched_keep_and_nested_has():
    op = Route({"unmatched": "keep", "rules": [{"name": "pref", "when": {"has": ["preference.chosen"]}, "buckets": ["preference"]}]})
    pref = new_record(source="s", locator="p", id="p", layout="preference", preference={"prompt": "q", "chosen": "a", "rejected": "b"})
    out = run(op, [pref, rec()])
    assert out[0]["buckets"] == ["preference"]
    assert (out[1]["status"], out[1]["buckets"]) == ("kept", [])
