"""Slack digests: Block Kit shape and limits, and one post per run."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from traceo_finops.reports import ReportStore
from traceo_finops.slack import (
    FIELDS_MAX,
    HEADER_MAX,
    TEXT_MAX,
    Digest,
    build_blocks,
    delivery_key,
    fallback_text,
    post_once,
)

pytestmark = pytest.mark.unit


def test_blocks_shape() -> None:
    d = Digest("Cardinality", "*3* series", {"Sources": "a"}, ("metric", "series"), [("up", 3), ("x_total", 10)],
               footer="Report: /r")
    blocks = build_blocks(d)
    assert [b["type"] for b in blocks] == ["header", "section", "section", "section", "context"]
    table = blocks[3]["text"]["text"]
    assert table.startswith("```") and "x_total" in table and table.splitlines()[1].startswith("-")
    assert fallback_text(d) == "Cardinality: *3* series"


def test_limits_are_respected() -> None:
    d = Digest("t" * 500, "s" * 10_000, {f"k{i}": "v" * 3000 for i in range(25)}, ("a",), [("x" * 200,)] * 200)
    blocks = build_blocks(d)
    assert len(blocks[0]["text"]["text"]) == HEADER_MAX
    assert len(blocks[1]["text"]["text"]) == TEXT_MAX
    assert len(blocks[2]["fields"]) == FIELDS_MAX and all(len(f["text"]) <= 2000 for f in blocks[2]["fields"])
    assert len(blocks[3]["text"]["text"]) <= TEXT_MAX


def test_posts_once_per_key(tmp_path: Path) -> None:
    store = ReportStore(str(tmp_path))
    sent: list[tuple[str, list]] = []
    key = delivery_key("finops_cardinality", "manual__2026-11-28T10:00:00+00:00", "cardinality")
    d = Digest("T", "S")
    assert post_once(store, date(2026, 11, 28), key, d, lambda t, b: sent.append((t, b))) is True
    assert post_once(store, date(2026, 11, 28), key, d, lambda t, b: sent.append((t, b))) is False
    assert len(sent) == 1
    other = delivery_key("finops_cardinality", "scheduled__2026-11-28", "cardinality")
    assert other != key
    assert post_once(store, date(2026, 11, 28), other, d, lambda t, b: sent.append((t, b))) is True
    assert len(sent) == 2


def test_failed_post_records_nothing(tmp_path: Path) -> None:
    store = ReportStore(str(tmp_path))

    def fail(text: str, blocks: list) -> None:
        raise RuntimeError("HTTP 500")

    key = delivery_key("d", "r", "n")
    with pytest.raises(RuntimeError):
        post_once(store, date(2026, 11, 28), key, Digest("T", "S"), fail)
    sent: list = []
    assert post_once(store, date(2026, 11, 28), key, Digest("T", "S"), lambda t, b: sent.append(t)) is True
    assert sent == ["T: S"]
