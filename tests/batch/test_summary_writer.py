"""The batch summary is rewritten at most every few seconds (not after every image) and always at the end."""
from __future__ import annotations

import json

from runtime.batch import SUMMARY_JSON, SummaryWriter


def _row(stem: str) -> dict:
    return {"stem": stem, "status": "ok", "error": "", "file": f"/in/{stem}.png", "lesions": []}


def test_throttled_then_forced(tmp_path):
    w = SummaryWriter(tmp_path, every_s=3600)
    w.update([_row("a")])  # the first update always writes
    assert [r["stem"] for r in json.loads((tmp_path / SUMMARY_JSON).read_text())] == ["a"]
    w.update([_row("a"), _row("b")])  # within the interval: not rewritten
    assert [r["stem"] for r in json.loads((tmp_path / SUMMARY_JSON).read_text())] == ["a"]
    w.update([_row("a"), _row("b")], force=True)
    assert [r["stem"] for r in json.loads((tmp_path / SUMMARY_JSON).read_text())] == ["a", "b"]


def test_every_update_writes_with_no_interval(tmp_path):
    w = SummaryWriter(tmp_path, every_s=0)
    for n in range(1, 4):
        w.update([_row(str(i)) for i in range(n)])
        assert len(json.loads((tmp_path / SUMMARY_JSON).read_text())) == n
