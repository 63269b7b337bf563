"""The run's local Optuna journal: durable where it matters, cheap everywhere else.

Owns the bytes of `runs/<name>/study.journal` and its lock; knows nothing about trials beyond the
journal's record format. The file is the one Optuna's `JournalFileBackend` writes (one JSON
record per line), so Optuna alone can still read a run.

Why not Optuna's own file backend: it takes a symlink lock and fsyncs every record, and a
trial writes about 50 (one per suggested parameter, user attribute and reported epoch). That
cost 19-23 ms per trial on a quiet disk and up to 240 ms on a busy one (bench/overhead.py), more
than the whole 5 % overhead budget of a one-epoch digits trial. Here every record is written
and flushed under an `flock` (a killed process loses nothing: the data is in the page cache),
and only records that end a trial or change the study are fsynced. A power cut can lose the
records of the trials still running; they are lost either way, and fsyncing a trial's end
makes every earlier record durable too, so a finished trial is never lost.

Torn writes: an append is all or nothing. A write that fails (a full disk) is cut back off
under the lock, and a writer first cuts away the torn last record a dead writer left (killed
mid-write, or a power cut): readers skip such a tail, but a record appended onto it would
damage the middle of the file. Damage in the middle cannot be repaired and is a
`JournalDamaged` naming the record.

Snapshots: every 100 trials Optuna's JournalStorage hands its replayed state to a backend that
can keep it; here it goes to `study.snapshot` beside the log, so a new process (the
leaderboard) unpickles it and replays only the records after it instead of the whole log.
"""

from __future__ import annotations

import fcntl
import json
import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from optuna.storages.journal import BaseJournalBackend

from cnnsearch.errors import DiskFull, JournalDamaged, is_disk_full
from cnnsearch.run.optuna_private import journal_snapshot_base

BaseJournalSnapshot: Any = journal_snapshot_base()  # a class; Any: Optuna may not have it

# Journal op codes (part of the file format Optuna reads back, so stable across versions; a
# test checks them against optuna.storages.journal._storage.JournalOperation).
CREATE_TRIAL = 4
SET_TRIAL_PARAM = 5
SET_TRIAL_STATE_VALUES = 6
SET_TRIAL_INTERMEDIATE_VALUE = 7
SET_TRIAL_USER_ATTR = 8
SET_TRIAL_SYSTEM_ATTR = 9
RUNNING, WAITING = 0, 4  # optuna.trial.TrialState values that do not end a trial
SNAPSHOT_CHECK_BYTES = 4096  # a snapshot is used only while the journal still ends its records with these
# Records about a trial still running: re-created by re-running it if a power cut loses them.
VOLATILE_OPS = frozenset(
    {CREATE_TRIAL, SET_TRIAL_PARAM, SET_TRIAL_INTERMEDIATE_VALUE, SET_TRIAL_USER_ATTR, SET_TRIAL_SYSTEM_ATTR}
)


def needs_fsync(record: dict[str, Any]) -> bool:
    """True for a record that must survive a power cut: a trial's end, anything about the study."""
    op = record.get("op_code")
    if op == SET_TRIAL_STATE_VALUES:
        return record.get("state") not in (RUNNING, WAITING)
    return op not in VOLATILE_OPS


def complete_length(descriptor: int) -> int:
    """Bytes up to the end of the file's last complete record: what is left once a torn tail
    (no newline yet, or a last line that is not JSON: a power cut) is cut away."""
    size = os.fstat(descriptor).st_size
    end = _newline_before(descriptor, size)  # one past the last newline; 0 when there is none
    if end == 0:
        return 0
    start = _newline_before(descriptor, end - 1)
    try:
        json.loads(os.pread(descriptor, end - start, start))
    except ValueError:
        return start
    return end


def _newline_before(descriptor: int, position: int, chunk: int = 65536) -> int:
    """One past the last newline before byte `position`; 0 when there is none."""
    while position > 0:
        start = max(0, position - chunk)
        found = os.pread(descriptor, position - start, start).rfind(b"\n")
        if found >= 0:
            return start + found + 1
        position = start
    return 0


class RunJournal(BaseJournalBackend, BaseJournalSnapshot):
    """Optuna journal backend over one append-only file, safe for several local processes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".flock")
        self.snapshot_path = self.path.with_name(self.path.stem + ".snapshot")
        if not self.path.exists():  # an existing run is only read until something is written
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch()
        # Where the next unread record starts: (its number, its byte offset). Reads normally
        # go on from here, so a sync reads only what other processes appended since.
        self._next_record = (0, 0)

    # ---- writing ------------------------------------------------------------------------------
    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        """Append under the lock, all or nothing: a failed write (a full disk) leaves the file
        exactly as it was, and a dead writer's torn record is cut away first."""
        text = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs).encode("utf-8")
        durable = any(needs_fsync(log) for log in logs)
        try:
            with open(self.lock_path, "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    self._append_locked(text, durable=durable)
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)
        except OSError as error:
            if is_disk_full(error):
                raise DiskFull(self.path) from None
            raise

    def _append_locked(self, text: bytes, *, durable: bool) -> None:
        descriptor = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            before = complete_length(descriptor)
            if before < os.fstat(descriptor).st_size:
                # Only a dead writer leaves a torn record: the lock we hold keeps live ones out.
                os.ftruncate(descriptor, before)
            try:
                written = 0
                while written < len(text):  # one write call in practice; a short write goes on
                    written += os.write(descriptor, text[written:])
            except OSError:
                # Readers take complete lines only, so none has read the part that got out.
                os.ftruncate(descriptor, before)
                raise
            if durable:
                # Not undone if it fails: the record is whole and readers may have read it.
                os.fsync(descriptor)
        finally:
            os.close(descriptor)

    # ---- reading ------------------------------------------------------------------------------
    def read_logs(self, log_number_from: int) -> Iterator[dict[str, Any]]:
        number, offset = self._start_of(log_number_from)
        with open(self.path, "rb") as handle:
            handle.seek(offset)
            data = handle.read()
        lines = data.split(b"\n")
        # The last piece has no newline yet: empty, or a record another process is writing now.
        for index, line in enumerate(lines[:-1]):
            try:
                record = json.loads(line)
            except ValueError:  # not JSON, or not even text (a power cut leaves NUL bytes)
                if index == len(lines) - 2 and not lines[-1]:
                    break  # a damaged last line (power cut mid-write): the next writer cuts it
                raise JournalDamaged(self.path, number + 1) from None
            offset += len(line) + 1
            number += 1
            self._next_record = (number, offset)
            if number > log_number_from:
                yield record

    def _start_of(self, log_number: int) -> tuple[int, int]:
        """Record number and byte offset to start reading at, at or before `log_number`."""
        number, offset = self._next_record
        if number == log_number:
            return number, offset
        if number > log_number:
            number, offset = 0, 0
        # A number we have not reached (a snapshot's): count newlines up to it, no JSON parsing.
        with open(self.path, "rb") as handle:
            handle.seek(offset)
            data = handle.read()
        position = 0
        while number < log_number:
            newline = data.find(b"\n", position)
            if newline < 0:
                break
            number += 1
            position = newline + 1
        return number, offset + position

    # ---- snapshots ----------------------------------------------------------------------------
    def save_snapshot(self, snapshot: bytes) -> None:
        """Written atomically, tagged with the Optuna version that pickled it and with where in the
        journal it was taken (Optuna saves one right after replaying every record: `_next_record`)."""
        import optuna

        offset = self._next_record[1]
        temp = self.snapshot_path.with_suffix(f".tmp{os.getpid()}")
        temp.write_bytes(pickle.dumps((optuna.__version__, snapshot, offset, self._digest_before(offset))))
        temp.replace(self.snapshot_path)

    def load_snapshot(self) -> bytes | None:
        """None (a full replay) when there is none, it is damaged or from another Optuna, or the
        journal no longer holds the records it was taken after: cut back (`head -n`, the repair
        JournalDamaged names) or short of its unfsynced tail after a power cut. Trusted blindly,
        it showed trials the journal no longer has and applied later records to the wrong ones."""
        import optuna

        try:
            version, snapshot, offset, digest = pickle.loads(self.snapshot_path.read_bytes())
        except Exception:  # damaged, or the older two-field form that cannot be checked
            return None
        if version != optuna.__version__ or self._digest_before(offset) != digest:
            return None
        return snapshot

    def _digest_before(self, offset: int) -> str | None:
        """A digest of the journal's last SNAPSHOT_CHECK_BYTES before `offset` (None: shorter than that)."""
        import hashlib

        try:
            with open(self.path, "rb") as handle:
                if os.fstat(handle.fileno()).st_size < offset:
                    return None
                start = max(0, offset - SNAPSHOT_CHECK_BYTES)
                handle.seek(start)
                return hashlib.sha256(handle.read(offset - start)).hexdigest()
        except OSError:
            return None
