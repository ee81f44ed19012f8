"""The write-ahead spool of the vehicle job (streaming_jobs/spool.py): durable batches, groups that are
committed again exactly as they were after a crash."""

from __future__ import annotations

import pyarrow as pa
import pytest

from trafficstream.streaming_jobs.spool import Group, Spool


def _rows(batch: int, n: int = 3) -> pa.Table:
    return pa.table({"kind": ["frame"] * n, "frame_index": [batch * 10 + i for i in range(n)]})


def test_batches_survive_a_new_process_and_group_in_order(tmp_path):
    spool = Spool(tmp_path / "s")
    for b in (3, 1, 2):
        spool.put(b, _rows(b))
    again = Spool(tmp_path / "s")  # another process after a crash
    assert again.pending() == [1, 2, 3] and len(again) == 3
    group = again.open_group(again.pending())
    assert group == Group(3, (1, 2, 3))
    table = again.read(group)
    assert table is not None and table.column("frame_index").to_pylist() == [10, 11, 12, 20, 21, 22, 30, 31, 32]
    assert not list((tmp_path / "s").glob(".*.tmp"))  # written atomically


def test_an_open_group_is_redone_with_the_same_batches_and_version(tmp_path):
    spool = Spool(tmp_path / "s")
    for b in (5, 6):
        spool.put(b, _rows(b))
    group = spool.open_group([5, 6])
    spool.put(7, _rows(7))  # arrives while the group commits
    after_crash = Spool(tmp_path / "s")
    assert after_crash.groups() == [group]  # committed again exactly as it was: same txnVersion 6
    assert after_crash.pending() == [7]  # not part of it
    after_crash.close_group(group)
    assert after_crash.groups() == [] and after_crash.pending() == [7] and len(after_crash) == 1


def test_a_replayed_batch_replaces_its_earlier_spool(tmp_path):
    spool = Spool(tmp_path / "s")
    spool.put(4, _rows(4, 2))
    spool.put(4, _rows(4, 5))
    table = spool.read(Group(4, (4,)))
    assert table is not None and table.num_rows == 5


def test_a_batch_replayed_after_its_group_was_committed_never_joins_a_later_group(tmp_path):
    """Spark replays batch 1 (its checkpoint commit was lost in a crash) after the committer had already
    committed and closed group 1: the replay is dropped, so group 2 commits batch 2 only (not batch 1's rows
    a second time under the new txnVersion)."""
    spool = Spool(tmp_path / "s")
    spool.put(1, _rows(1))
    group = spool.open_group(spool.pending())
    spool.close_group(group)
    restarted = Spool(tmp_path / "s")
    assert restarted.committed() == 1
    restarted.put(1, _rows(1))  # the replay
    restarted.put(2, _rows(2))
    assert restarted.pending() == [2] and len(restarted) == 1
    assert restarted.open_group(restarted.pending()) == Group(2, (2,))


def test_unknown_spool_format_is_refused(tmp_path):
    spool = Spool(tmp_path / "s")
    (tmp_path / "s" / "group-000000000001.json").write_text('{"format": 99, "version": 1, "batches": [1]}')
    with pytest.raises(ValueError, match="spool format"):
        spool.groups()


def test_a_commit_is_due_after_the_interval_or_when_the_spool_fills():
    from trafficstream.streaming_jobs.sinks import commit_due

    assert not commit_due(0, 999.0, 30.0, 256)  # nothing to commit
    assert not commit_due(10, 12.0, 30.0, 256)  # gathering batches
    assert commit_due(10, 30.0, 30.0, 256)
    # a long interval at a live camera's pace: the commit starts before the query would have to wait for it
    assert commit_due(128, 60.0, 600.0, 256) and not commit_due(127, 60.0, 600.0, 256)
