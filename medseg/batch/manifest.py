"""The batch manifest (``OUTPUT_DIR/batch.sqlite``) and the lock that keeps one batch per output.

The manifest is a SQLite database in WAL mode, written only by the process that runs the
batch (the Dask client, never a worker), one short transaction per event: a run killed at any
instant (SIGKILL included) leaves every committed row intact, and other programs on the same
host may read it while a batch runs (``sqlite3 OUTPUT_DIR/batch.sqlite``). ``synchronous=NORMAL``
(no fsync per commit: 5 ms each on this machine's disk, more on a network file system) is enough,
because a case folder, which is fsynced before it is published, is the proof that a case is done;
the few rows a power cut could take back are found again from the folders. Tables:

``cases``
    One row per case: status (``pending``, ``running``, ``done``, ``failed``, ``interrupted``,
    ``kept``), input path, series and sha256, model name/version/weights sha256, options hash,
    attempts and retries of its last run, timings per stage, peak memory, outputs, summary
    (organ volumes, lesions) and, for a failure, the one-line error.
``attempts``
    Every attempt of every case in every run: worker, process id, start and end, outcome
    (``done``, ``failed``, ``lost`` when the worker died, ``error`` when an attempt raised and
    was retried, ``interrupted`` when the batch itself stopped).
``runs``
    One row per ``medseg batch`` invocation: command, model, options, executor, counts.
``input_hashes``
    Content hashes of inputs by their files' identities (size, mtime, ctime, inode), so a
    resumed batch does not read every scan again to know it is unchanged.

The manifest is a record, not the truth about results: a case counts as done only when its case
folder is complete and carries the same input, model and options (:mod:`medseg.batch.resume`).

:class:`OutputLock` (``batch.lock``) is an ``flock`` held for the whole run; a second batch on the
same output folder is refused with the holder's process id, host and start time. The kernel
drops it when the holder dies, even by SIGKILL.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Self

from medseg.case import now_utc
from medseg.errors import InputError

__all__ = ["LOCK_NAME", "MANIFEST_NAME", "WORKERS_LOCK_NAME", "Manifest", "OutputLock"]

MANIFEST_NAME = "batch.sqlite"
LOCK_NAME = "batch.lock"
#: Held shared by every Dask worker of a run: a new run waits until a killed run's workers are gone.
WORKERS_LOCK_NAME = "batch.workers.lock"
FORMAT = "medseg-batch-manifest"
FORMAT_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY AUTOINCREMENT, started_utc TEXT, finished_utc TEXT, status TEXT,
    command TEXT, medseg_version TEXT, host TEXT, pid INTEGER, executor TEXT, model_json TEXT,
    options_json TEXT, options_hash TEXT, n_cases INTEGER, counts_json TEXT);
CREATE TABLE IF NOT EXISTS cases (
    case_id TEXT PRIMARY KEY, source_key TEXT, input_path TEXT, series TEXT, input_kind TEXT,
    input_sha256 TEXT, model_name TEXT, model_version TEXT, weights_sha256 TEXT, options_hash TEXT,
    status TEXT NOT NULL, attempts INTEGER DEFAULT 0, retries INTEGER DEFAULT 0, run_id INTEGER,
    started_utc TEXT, finished_utc TEXT, seconds REAL, timings_json TEXT, peak_rss_mb REAL, worker TEXT,
    outputs_json TEXT, case_json_sha256 TEXT, summary_json TEXT, warnings_json TEXT, error TEXT, note TEXT);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, case_id TEXT NOT NULL, run_id INTEGER, attempt INTEGER,
    worker TEXT, host TEXT, pid INTEGER, started_utc TEXT, finished_utc TEXT, outcome TEXT, error TEXT);
CREATE TABLE IF NOT EXISTS input_hashes (signature TEXT PRIMARY KEY, sha256 TEXT, hashed_utc TEXT);
CREATE INDEX IF NOT EXISTS attempts_case ON attempts (case_id, run_id);
"""

#: Columns of ``cases`` a caller may set (the rest are managed here).
_CASE_COLUMNS = ("source_key", "input_path", "series", "input_kind", "input_sha256", "model_name",
                 "model_version", "weights_sha256", "options_hash", "status", "attempts", "retries", "run_id",
                 "started_utc", "finished_utc", "seconds", "timings_json", "peak_rss_mb", "worker", "outputs_json",
                 "case_json_sha256", "summary_json", "warnings_json", "error", "note")


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, default=str)


class Manifest:
    """The SQLite manifest of one output folder (see the module docstring).

    Examples
    --------
    >>> import tempfile
    >>> m = Manifest(tempfile.mkdtemp())
    >>> run = m.start_run(command="medseg batch in out", executor="in-process", model={}, options={},
    ...                   options_hash="x", n_cases=1)
    >>> m.update_case("a", status="pending", run_id=run)
    >>> m.case("a")["status"]
    'pending'
    """

    def __init__(self, output_dir: str | os.PathLike) -> None:
        self.path = Path(output_dir) / MANIFEST_NAME
        try:
            self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise InputError(self.path, f"is not a readable batch manifest ({exc})",
                             "move it away to start a new manifest (the case folders stay valid)") from exc
        if str(mode).lower() != "wal":  # pragma: no cover - file systems without shared memory
            self._db.execute("PRAGMA journal_mode=DELETE")
        stored = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        if not stored:
            with self._tx():
                self._db.executemany("INSERT INTO meta VALUES (?, ?)",
                                     [("format", FORMAT), ("format_version", str(FORMAT_VERSION))])
        elif stored.get("format") != FORMAT or int(stored.get("format_version", "0")) > FORMAT_VERSION:
            raise InputError(self.path, f"is not a manifest this medseg writes (format {stored.get('format')} "
                             f"version {stored.get('format_version')})", "update medseg, or use another output folder")

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()

    # --- runs -----------------------------------------------------------------------------
    def start_run(self, *, command: str, executor: str, model: Mapping[str, Any], options: Mapping[str, Any],
                  options_hash: str, n_cases: int) -> int:
        """Record a new run; cases left ``running`` by a run that died become ``interrupted``."""
        from medseg import __version__

        with self._tx() as db:
            db.execute("UPDATE attempts SET outcome='interrupted', finished_utc=? WHERE outcome IS NULL", (now_utc(),))
            db.execute("UPDATE cases SET status='interrupted', note='the batch stopped during this case' "
                       "WHERE status='running'")
            db.execute("UPDATE runs SET status='killed' WHERE status='running'")
            cursor = db.execute(
                "INSERT INTO runs (started_utc, status, command, medseg_version, host, pid, executor, model_json, "
                "options_json, options_hash, n_cases) VALUES (?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (now_utc(), command, __version__, socket.gethostname(), os.getpid(), executor, _json(dict(model)),
                 _json(dict(options)), options_hash, n_cases))
            return int(cursor.lastrowid)

    def finish_run(self, run_id: int, status: str, counts: Mapping[str, int]) -> None:
        with self._tx() as db:
            db.execute("UPDATE attempts SET outcome='interrupted', finished_utc=? WHERE outcome IS NULL AND run_id=?",
                       (now_utc(), run_id))
            if status != "finished":
                db.execute("UPDATE cases SET status='interrupted', note='the batch stopped during this case' "
                           "WHERE status='running' AND run_id=?", (run_id,))
            db.execute("UPDATE runs SET finished_utc=?, status=?, counts_json=? WHERE run_id=?",
                       (now_utc(), status, _json(dict(counts)), run_id))

    # --- cases ----------------------------------------------------------------------------
    def case(self, case_id: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT * FROM cases WHERE case_id=?", (case_id,)).fetchone()
        return None if row is None else dict(row)

    def cases(self) -> dict[str, dict[str, Any]]:
        return {row["case_id"]: dict(row) for row in self._db.execute("SELECT * FROM cases")}

    @staticmethod
    def read_known_ids(output_dir: str | os.PathLike) -> dict[str, str]:
        """:meth:`known_ids` of the manifest in ``output_dir`` if there is one (nothing created)."""
        path = Path(output_dir) / MANIFEST_NAME
        if not path.is_file():
            return {}
        try:
            with contextlib.closing(sqlite3.connect(path, timeout=30.0)) as db:
                return {k: v for k, v in db.execute("SELECT source_key, case_id FROM cases") if k}
        except sqlite3.DatabaseError:
            return {}  # reported when the batch opens it

    def known_ids(self) -> dict[str, str]:
        """source_key -> case_id of every case an earlier run saw."""
        return {row[0]: row[1] for row in self._db.execute("SELECT source_key, case_id FROM cases") if row[0]}

    def update_case(self, case_id: str, **values: Any) -> None:
        """Insert or update one case row (``*_json`` columns take plain data)."""
        unknown = set(values) - set(_CASE_COLUMNS)
        if unknown:
            raise ValueError(f"unknown manifest columns: {sorted(unknown)}")
        cells = {k: (_json(v) if k.endswith("_json") else v) for k, v in values.items()}
        names = ", ".join(cells)
        marks = ", ".join("?" for _ in cells)
        updates = ", ".join(f"{k}=excluded.{k}" for k in cells)
        with self._tx() as db:
            db.execute(f"INSERT INTO cases (case_id, {names}) VALUES (?, {marks}) "
                       f"ON CONFLICT(case_id) DO UPDATE SET {updates}", (case_id, *cells.values()))

    # --- attempts -------------------------------------------------------------------------
    def attempt_started(self, case_id: str, run_id: int, *, worker: str, host: str, pid: int | None,
                        started_utc: str) -> int:
        """Record the start of an attempt; returns its number within this run (1, 2, ...)."""
        with self._tx() as db:
            number = db.execute("SELECT COUNT(*) FROM attempts WHERE case_id=? AND run_id=?",
                                (case_id, run_id)).fetchone()[0] + 1
            db.execute("INSERT INTO attempts (case_id, run_id, attempt, worker, host, pid, started_utc) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)", (case_id, run_id, number, worker, host, pid, started_utc))
            db.execute("UPDATE cases SET status='running', attempts=?, retries=?, run_id=?, worker=?, started_utc=? "
                       "WHERE case_id=?", (number, number - 1, run_id, worker, started_utc, case_id))
        return number

    def attempt_ended(self, case_id: str, run_id: int, *, outcome: str, error: str | None = None,
                      worker: str | None = None) -> None:
        """Close the open attempt of a case (on ``worker`` when given)."""
        query = "SELECT id FROM attempts WHERE case_id=? AND run_id=? AND outcome IS NULL"
        args: tuple = (case_id, run_id)
        if worker:
            query += " AND worker=?"
            args += (worker,)
        with self._tx() as db:
            row = db.execute(query + " ORDER BY id DESC LIMIT 1", args).fetchone()
            if row is not None:
                db.execute("UPDATE attempts SET outcome=?, error=?, finished_utc=? WHERE id=?",
                           (outcome, error, now_utc(), row[0]))

    def adopt_interrupted(self, case_id: str, written_at: float) -> None:
        """The case's last attempt was cut off after it wrote its complete case folder (found so
        by :mod:`medseg.batch.resume`; ``written_at`` is the folder's ``case.json`` mtime): it did
        finish, so it is recorded as done, once. An attempt that started after the folder was
        written did not make it and stays interrupted."""
        from datetime import datetime, timezone

        with self._tx() as db:
            row = db.execute("SELECT id, outcome, started_utc FROM attempts WHERE case_id=? ORDER BY id DESC LIMIT 1",
                             (case_id,)).fetchone()
            if row is None or row[1] != "interrupted" or not row[2]:
                return
            started = datetime.strptime(row[2], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()
            if written_at >= started:  # started_utc is whole seconds, rounded down
                db.execute("UPDATE attempts SET outcome='done', error='case folder complete; recorded by the next run' "
                           "WHERE id=?", (row[0],))

    def attempts(self, case_id: str | None = None) -> list[dict[str, Any]]:
        if case_id is None:
            rows = self._db.execute("SELECT * FROM attempts ORDER BY id")
        else:
            rows = self._db.execute("SELECT * FROM attempts WHERE case_id=? ORDER BY id", (case_id,))
        return [dict(r) for r in rows]

    # --- input hashes ---------------------------------------------------------------------
    def cached_hash(self, signature: str) -> str | None:
        row = self._db.execute("SELECT sha256 FROM input_hashes WHERE signature=?", (signature,)).fetchone()
        return None if row is None else str(row[0])

    def store_hashes(self, pairs: Mapping[str, str]) -> None:
        """signature -> sha256."""
        with self._tx() as db:
            db.executemany("INSERT OR REPLACE INTO input_hashes VALUES (?, ?, ?)",
                           [(sig, sha, now_utc()) for sig, sha in pairs.items()])


class OutputLock:
    """An exclusive ``flock`` on ``OUTPUT_DIR/batch.lock`` for the life of a batch.

    Raises :class:`InputError` naming the holder when another batch has it. ``flock`` is
    released by the kernel when the holding process ends in any way. On network file systems it
    works where ``flock`` is supported (NFSv4, Lustre mounted with ``-o flock``, GPFS).
    """

    def __init__(self, output_dir: str | os.PathLike, *, command: str = "", probe: bool = False) -> None:
        import fcntl

        self.path = Path(output_dir) / LOCK_NAME
        self._fd = os.open(self.path, os.O_RDONLY if probe else os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(self._fd)
            os.close(self._fd)
            who = (f" (process {holder.get('pid')} on {holder.get('host')}, started {holder.get('started_utc')})"
                   if holder else "")
            raise InputError(output_dir, f"is in use by another medseg batch{who}",
                             "wait for it to finish, or give another output folder; two batches must not "
                             "write one output folder at once") from None
        if probe:  # only asked whether it is free: nothing written
            self.release()
            return
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started_utc": now_utc(), "command": command}
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, (json.dumps(info) + "\n").encode(), 0)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing drops the flock
            self._fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}


def wait_for_old_workers(output_dir: str | os.PathLike, *, timeout_s: float = 1800.0, on_wait=None) -> None:
    """Wait until no Dask worker is still running a case of an earlier (killed) run of this output.

    Workers hold ``batch.workers.lock`` shared while they run a case (:mod:`medseg.batch.dask_run`);
    on a cluster that outlives its client, a case under way when the client was killed goes on
    and is published. Starting only after it is done means a case is never computed by two runs
    at once. ``on_wait(message)`` is called once if there is something to wait for.
    """
    import fcntl
    import time

    path = Path(output_dir) / WORKERS_LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if on_wait is not None:
                    on_wait("waiting for Dask workers of an earlier run of this output to finish their case")
                    on_wait = None
                if time.monotonic() > deadline:
                    raise InputError(output_dir, f"still has a case of an earlier batch running on a Dask worker "
                                     f"after {timeout_s / 60:.0f} min", "stop that worker (its cluster or job), then run "
                                     "again") from None
                time.sleep(0.5)
    finally:
        os.close(fd)
