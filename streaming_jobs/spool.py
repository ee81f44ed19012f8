"""Write-ahead spool of the vehicle job: a micro-batch is durable the moment it is spooled, its Delta commits
follow in the background, several micro-batches per commit.

Why: a Delta commit costs seconds on small machines (a Spark job plus the transaction log), several tables
per micro-batch. Committing inside ``foreachBatch`` makes every micro-batch wait for them, and with it every
live frame behind it. With the spool, ``foreachBatch`` publishes the batch's results, writes its stage-2 rows
to one local Arrow file (milliseconds) and returns; Spark commits the batch's offsets and starts the next one
while a committer thread turns the spooled batches into Delta commits.

Exactly once, across crashes anywhere:

* A batch is spooled (``batch-<id>.arrow``, written to a temporary name, fsynced, renamed) before
  ``foreachBatch`` returns, so before Spark commits its offsets: a crash before that replays it, after that
  its rows are on disk.
* The committer takes the pending batches as one *group*, writes the group's manifest
  (``group-<version>.json``: its batch ids; version = the largest), commits every table with Delta's
  ``txnAppId`` / ``txnVersion`` = the group's version, then deletes the batch files and the manifest. After a
  crash, open manifests are committed again with exactly the same batches and version: tables that already
  have that version skip the write, the others get it. ``tracks`` / ``flow`` MERGEs are guarded by each row's
  own batch id.
* A batch Spark replays after a crash is spooled again under its own id. Groups are committed in order and
  each holds every pending batch up to its version, so every batch up to the last closed group's version is
  in Delta: the spool records that version (``committed.json``, written before the group's files are
  deleted) and drops a replayed batch at or below it, so it never rides along in a later group.

The spool is a local (or NFS) folder beside the query checkpoint; with a checkpoint on object storage the job
commits synchronously instead (see :class:`~trafficstream.streaming_jobs.sinks.BatchWriter`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

SPOOL_FORMAT = 1
_BATCH = "batch-{:012d}.arrow"
_GROUP = "group-{:012d}.json"
_COMMITTED = "committed.json"


@dataclass(frozen=True, slots=True)
class Group:
    version: int  # txnVersion of the group's Delta commits: its largest batch id
    batches: tuple[int, ...]


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a power cut
    finally:
        os.close(dir_fd)


def _read_doc(path: Path) -> dict:
    """A manifest of this spool (a group, the committed version); refuses another build's format."""
    doc = json.loads(path.read_text())
    if doc.get("format") != SPOOL_FORMAT:
        raise ValueError(f"{path}: spool format {doc.get('format')!r}, this build reads {SPOOL_FORMAT}")
    return doc


class Spool:
    """The spool folder: batch files and group manifests (single writer per kind: the query thread puts
    batches, the committer thread forms and closes groups)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def put(self, batch_id: int, table: pa.Table) -> None:
        """Make a micro-batch's stage-2 rows durable (replaces an earlier spool of the same batch)."""
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        _write_atomic(self.root / _BATCH.format(batch_id), sink.getvalue().to_pybytes())

    def pending(self) -> list[int]:
        """Spooled batch ids not in an open group and not committed yet, in order (a replayed batch that
        is already in Delta is dropped here)."""
        grouped = {b for g in self.groups() for b in g.batches}
        done = self.committed()
        out = []
        for i in sorted(set(self._batch_ids()) - grouped):
            if done is not None and i <= done:
                (self.root / _BATCH.format(i)).unlink(missing_ok=True)
            else:
                out.append(i)
        return out

    def committed(self) -> int | None:
        """The version of the last group closed: every batch up to it is in Delta."""
        path = self.root / _COMMITTED
        return int(_read_doc(path)["version"]) if path.exists() else None

    def groups(self) -> list[Group]:
        """Groups opened and not yet closed (a crash in the middle of their commits), oldest first."""
        out = []
        for path in sorted(self.root.glob("group-*.json")):
            doc = _read_doc(path)
            out.append(Group(int(doc["version"]), tuple(int(b) for b in doc["batches"])))
        return out

    def open_group(self, batch_ids: list[int]) -> Group:
        if not batch_ids:
            raise ValueError("a group needs at least one batch")
        group = Group(max(batch_ids), tuple(sorted(batch_ids)))
        doc = {"format": SPOOL_FORMAT, "version": group.version, "batches": list(group.batches)}
        _write_atomic(self.root / _GROUP.format(group.version), json.dumps(doc).encode())
        return group

    def read(self, group: Group) -> pa.Table | None:
        """The group's rows (batches whose file is gone, already committed and closed, are left out)."""
        tables = []
        for b in group.batches:
            path = self.root / _BATCH.format(b)
            if path.exists():
                with pa.memory_map(str(path)) as source:
                    tables.append(pa.ipc.open_file(source).read_all())
        return pa.concat_tables(tables) if tables else None

    def close_group(self, group: Group) -> None:
        """The group is in every table: record its version, then forget its batches and the manifest."""
        if group.version > (self.committed() or -1):
            doc = {"format": SPOOL_FORMAT, "version": group.version}
            _write_atomic(self.root / _COMMITTED, json.dumps(doc).encode())
        for b in group.batches:
            (self.root / _BATCH.format(b)).unlink(missing_ok=True)
        (self.root / _GROUP.format(group.version)).unlink(missing_ok=True)

    def _batch_ids(self) -> list[int]:
        return [int(p.name[6:18]) for p in self.root.glob("batch-*.arrow")]

    def __len__(self) -> int:
        return len(self._batch_ids())
