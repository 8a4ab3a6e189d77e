"""Dialogues in manifests: speaker names, Anthropic-HH transcripts, message lists, and the split of
a chosen/rejected pair into its shared context and its two final answers.

- ``ROLES``: speaker names (``human``, ``gpt``, ``bot``...) -> ``user`` / ``assistant`` / ``system`` / ``tool``.
- ``parse_hh(text)``: ``"\\n\\nHuman: q\\n\\nAssistant: a"`` -> ``[("user", "q"), ("assistant", "a")]``, or
  None when the text is not such a transcript (it must start with ``Human:`` and have an
  ``Assistant:`` turn). Paragraph breaks inside a turn stay in its text.
- ``as_turns(value)``: an HH transcript or a plain message list (``role``/``from`` and
  ``content``/``value`` only, text contents, known speakers) -> turns; anything else -> None.
- ``split_pair(chosen, rejected)``: the shared prefix and the two final assistant turns.
- ``pair_winner(label)``: which of ``answer1`` / ``answer2`` a preference label picks (1, 2 or
  ``"tie"``; None when it says neither).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["ROLES", "Turn", "as_turns", "pair_winner", "parse_hh", "split_pair"]

ROLES = {
    "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "model": "assistant",
    "bot": "assistant", "system": "system", "tool": "tool", "function": "tool", "observation": "tool",
}  # fmt: skip
_MESSAGE_KEYS = {"role", "from", "content", "value"}
_HH_TURN = re.compile(r"\n\n(Human|Assistant):[ \t]?")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}

Turn = tuple[str, str]  # (role, text)


def parse_hh(text: str) -> list[Turn] | None:
    """The turns of an Anthropic-HH transcript, or None when ``text`` is not one."""
    body = text.lstrip(" \t\r\n")
    if not body.startswith("Human:") or "\n\nAssistant:" not in body:
        return None
    parts = _HH_TURN.split("\n\n" + body)
    turns = [(_HH_ROLES[speaker], said.strip()) for speaker, said in zip(parts[1::2], parts[2::2], strict=True)]
    return turns or None


def as_turns(value: Any) -> list[Turn] | None:
    """An HH transcript or a plain message list as turns; None for anything else (a plain answer,
    messages with extra keys or non-text contents: those are kept whole by the caller)."""
    if isinstance(value, str):
        return parse_hh(value)
    if not isinstance(value, list) or not value:
        return None
    turns: list[Turn] = []
    for m in value:
        if not isinstance(m, dict) or not set(m) <= _MESSAGE_KEYS:
            return None
        role = ROLES.get(str(m.get("role", m.get("from"))).lower())
        text = m.get("content", m.get("value"))
        if role is None or not isinstance(text, str):
            return None
        turns.append((role, text))
    return turns


def split_pair(chosen: list[Turn], rejected: list[Turn]) -> tuple[list[Turn], str, str] | None:
    """``(shared prefix, chosen answer, rejected answer)`` when the two dialogues are the same up
    to one final assistant turn each and the prefix has a user turn; None otherwise."""
    k = 0
    while k < min(len(chosen), len(rejected)) and chosen[k] == rejected[k]:
        k += 1
    if len(chosen) != k + 1 or len(rejected) != k + 1:
        return None
    if chosen[k][0] != "assistant" or rejected[k][0] != "assistant":
        return None
    prefix = chosen[:k]
    if not any(role == "user" for role, _ in prefix):
        return None
    return prefix, chosen[k][1], rejected[k][1]


_FIRST = {"1", "answer1", "answer_1", "answer 1", "a", "answer_a", "answer a", "first", "model_a", "response_a"}
_SECOND = {"2", "answer2", "answer_2", "answer 2", "b", "answer_b", "answer b", "second", "model_b", "response_b"}
_TIE = {"tie", "equal", "same", "draw", "both", "neither", "tie (bothbad)", "0.5"}


def pair_winner(label: Any) -> int | str | None:
    """1 or 2 (the better of ``answer1`` / ``answer2``), ``"tie"``, or None when the label says
    neither. Numbers are 1-based like the key names: 0 is refused as ambiguous (a 0-based index or a tie?)."""
    if isinstance(label, bool):
        return None
    if isinstance(label, int | float):
        return int(label) if label in (1, 2) else ("tie" if label == 0.5 else None)
    if isinstance(label, str):
        word = label.strip().lower()
        if word in _FIRST:
            return 1
        if word in _SECOND:
            return 2
        if word in _TIE:
            return "tie"
    return None
