"""Stage-table joins: a small side broadcast to every task gives what the distributed join gives."""

import pandas as pd
import pytest
import ray

from freeal_ray import tables


def _rows(n):
    return pd.DataFrame({"id": [f"r{i}" for i in range(n)], "text": [f"text {i}" for i in range(n)], "label": ["a", "b"] * (n // 2)})


@pytest.mark.parametrize("broadcast", [True, False])
def test_an_anti_join_on_ids_drops_exactly_the_done_rows(ray_session, tmp_path, monkeypatch, broadcast):
    monkeypatch.setattr(tables, "BROADCAST_ROWS", 100_000 if broadcast else 0)
    tables.write_part(pd.DataFrame({"id": ["r1", "r4", "r9", "elsewhere"]}), tmp_path / "done")
    left = tables.without_ids(ray.data.from_pandas(_rows(10)), tmp_path / "done").to_pandas()
    assert sorted(left["id"]) == sorted(f"r{i}" for i in range(10) if i not in (1, 4, 9))
    assert set(left.columns) == {"id", "text", "label"}
    assert tables.without_ids(ray.data.from_pandas(_rows(4)), tmp_path / "nothing").count() == 4


@pytest.mark.parametrize("broadcast", [True, False])
def test_copied_rows_take_their_source_row_under_their_own_id(ray_session, tmp_path, monkeypatch, broadcast):
    monkeypatch.setattr(tables, "BROADCAST_ROWS", 100_000 if broadcast else 0)
    # r2 repeated twice, r5 once; a copy whose source is absent gets nothing
    tables.write_part(pd.DataFrame({"id": ["c1", "c2", "c3", "c4"], "canonical_id": ["r2", "r2", "r5", "gone"]}), tmp_path / "dupes")
    got = tables.copied_rows(ray.data.from_pandas(_rows(8)), tmp_path / "dupes", "canonical_id").to_pandas()
    got = got.sort_values("id").reset_index(drop=True)
    assert list(got["id"]) == ["c1", "c2", "c3"] and list(got["canonical_id"]) == ["r2", "r2", "r5"]
    assert list(got["text"]) == ["text 2", "text 2", "text 5"] and list(got["label"]) == ["a", "a", "b"]
