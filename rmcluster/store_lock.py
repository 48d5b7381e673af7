"""One job per results store: a lock file naming the job that holds it (host, pid, start time, run).

Two jobs writing one store would each skip what the other has not committed yet and score it twice,
and both would rewrite files in the final dedupe. So a job takes `DIR/.job.lock` before it reads the
store's keys and gives it back when it ends. A second job refuses with the holder's details. A lock
whose holder is dead (its pid no longer runs on its host) is taken over: a killed job leaves one.
The lock is created with an exclusive create on local disks; on object stores, which have no
exclusive create, it is written and read back, which is enough for jobs started by people, not a
guard against two started in the same second.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from types import TracebackType
from typing import Optional

import pyarrow.fs as pafs

from .store import resolve_uri

LOCK_FILE = ".job.lock"


class StoreLocked(RuntimeError):
    """Another running job holds the results store."""


@dataclass(frozen=True)
class LockHolder:
    host: str
    pid: int
    started_at: str
    run: str

    def describe(self) -> str:
        return f"run {self.run}, pid {self.pid} on {self.host}, started {self.started_at}"

    def alive(self) -> bool:
        """Whether the holder still runs; a holder on another host is taken to be alive (it cannot be seen)."""
        if self.host != socket.gethostname():
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's live process
            return True
        return True


class StoreLock:
    """`with StoreLock(uri, run_id):` holds the store for the block; raises StoreLocked if a live job does."""

    def __init__(self, uri: str, run: str):
        self.fs, root = resolve_uri(uri)
        self.path = f"{root.rstrip('/')}/{LOCK_FILE}"
        self.me = LockHolder(socket.gethostname(), os.getpid(),
                             datetime.now(timezone.utc).isoformat(timespec="seconds"), run)
        self.took_over: Optional[LockHolder] = None

    def holder(self) -> Optional[LockHolder]:
        try:
            with self.fs.open_input_stream(self.path) as f:
                data = json.loads(f.read().decode())
            return LockHolder(**data)
        except (FileNotFoundError, OSError):
            return None
        except (ValueError, TypeError):  # a half-written lock: nobody holds it
            return None

    def acquire(self) -> None:
        current = self.holder()
        if current is not None and current.alive():
            raise StoreLocked(f"another job is writing this results store ({current.describe()}); wait for it, or "
                              f"if it is gone for good, delete {self.path}")
        self.took_over = current  # a dead job's lock (or none)
        if current is not None:
            self.fs.delete_file(self.path)
        self._create()
        if self.holder() != self.me:  # lost a race to a job that started at the same time
            raise StoreLocked(f"another job took this results store just now ({self.holder()})")

    def _create(self) -> None:
        parent = self.path.rpartition("/")[0]
        self.fs.create_dir(parent, recursive=True)
        payload = json.dumps(asdict(self.me)).encode()
        if isinstance(self.fs, pafs.LocalFileSystem):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                raise StoreLocked(f"another job took this results store just now ({self.holder()})") from None
            with os.fdopen(fd, "wb") as f:
                f.write(payload)
            return
        with self.fs.open_output_stream(self.path) as out:
            out.write(payload)

    def release(self) -> None:
        if self.holder() == self.me:
            self.fs.delete_file(self.path)

    def __enter__(self) -> "StoreLock":
        self.acquire()
        return self

    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.release()
