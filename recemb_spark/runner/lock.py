"""One run per date: a lock file ``<warehouse>/_manifests/dt=<date>/run.lock``.

The lock holds JSON: owner (user), host, pid, start time, command and a random token. A
second run for the same date and warehouse fails fast with :class:`LockError` (exit 5)
naming the holder. A lock is *stale*, and taken over with a warning, when its process is
gone (same host, pid no longer alive) or when it is older than
``warehouse.lock_max_age_hours`` (the only test possible for a holder on another host).

Creating the lock is atomic on a local disk (the JSON is written to a private temporary file
and hard-linked into place, which fails when the lock exists) and on HDFS (``create`` without
overwrite). Whoever takes the lock first deletes the date's staging folder: the partitions a
killed run was writing (:class:`~recemb_spark.io.warehouse.Warehouse`).
Object stores (s3a://, gs://) have no atomic create: there the lock catches runs
that start seconds apart, not at the same instant.
"""
from __future__ import annotations

import datetime as dt
import getpass
import json
import logging
import os
import socket
import uuid
from typing import Any
from urllib.parse import urlparse

from ..errors import LockError
from ..io.warehouse import Warehouse, join_path

log = logging.getLogger(__name__)


def lock_path(wh: Warehouse, run_date: str) -> str:
    return join_path(wh.root, "_manifests", f"dt={run_date}", "run.lock")


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists on this host (zombies count as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def stale_reason(held: dict[str, Any], max_age_hours: float,
                 now: dt.datetime | None = None) -> str | None:
    """Why the lock ``held`` is stale, or None when its run may still be going."""
    now = now or dt.datetime.now(dt.timezone.utc)
    if held.get("host") == socket.gethostname() and isinstance(held.get("pid"), int) \
            and not pid_alive(held["pid"]):
        return f"process {held['pid']} on {held['host']} is gone"
    try:
        started = dt.datetime.fromisoformat(held["started_at"])
    except (KeyError, TypeError, ValueError):
        return None
    age = (now - started).total_seconds() / 3600
    if age > max_age_hours:
        return f"it is {age:.1f} h old (warehouse.lock_max_age_hours={max_age_hours:g})"
    return None


class RunLock:
    """The lock of one run date; use as a context manager (released on exit if still ours)."""

    def __init__(self, wh: Warehouse, run_date: str, max_age_hours: float, command: str = "run"):
        self.wh, self.run_date, self.max_age_hours = wh, run_date, max_age_hours
        self.path = lock_path(wh, run_date)
        parsed = urlparse(self.path)
        self.local = parsed.scheme in ("", "file")
        self.local_path = parsed.path if parsed.scheme == "file" else self.path
        self.info = {"owner": _user(), "host": socket.gethostname(), "pid": os.getpid(),
                     "started_at": dt.datetime.now(dt.timezone.utc).isoformat(),
                     "command": command, "run_date": run_date, "token": uuid.uuid4().hex}

    # -- the file, locally or through Hadoop's FileSystem ----------------------------------
    def _create(self) -> bool:
        """Create the lock with our info; False when a lock exists already."""
        text = json.dumps(self.info, indent=2)
        if not self.local:
            return self.wh.fs.create_new(self.path, text)
        os.makedirs(os.path.dirname(self.local_path), exist_ok=True)
        tmp = f"{self.local_path}.{self.info['token']}.tmp"
        with open(tmp, "w") as f:
            f.write(text)
        try:
            os.link(tmp, self.local_path)  # atomic: fails when the lock exists
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)

    def _read(self) -> dict[str, Any] | None:
        """The lock's content; {} when unreadable (being written), None when there is none."""
        try:
            if self.local:
                with open(self.local_path) as f:
                    text = f.read()
            else:
                if not self.wh.fs.exists(self.path):
                    return None
                text = self.wh.fs.read_text(self.path)
        except FileNotFoundError:
            return None
        try:
            held = json.loads(text)
        except ValueError:
            return {}
        return held if isinstance(held, dict) else {}

    def _remove_if(self, token: str) -> bool:
        """Remove the lock if it still carries ``token``; True when it was removed."""
        if not self.local:
            held = self._read()
            if held is None or held.get("token") != token:
                return False
            self.wh.fs.delete(self.path)
            return True
        # move it aside first (atomic), then check whose it was: a lock taken over by
        # someone else in between goes back into place
        aside = f"{self.local_path}.{self.info['token']}.old"
        try:
            os.rename(self.local_path, aside)
        except FileNotFoundError:
            return False
        try:
            with open(aside) as f:
                moved = json.loads(f.read() or "{}")
        except ValueError:
            moved = {}
        if moved.get("token") != token:
            try:
                os.link(aside, self.local_path)
            except FileExistsError:
                pass
            os.unlink(aside)
            return False
        os.unlink(aside)
        return True

    # -- the protocol ------------------------------------------------------------------------
    def acquire(self) -> None:
        """Take the lock, or take over a stale one with a warning; LockError when it is held."""
        if self._create():
            log.info("run lock %s taken (pid %d)", self.path, self.info["pid"])
            self.wh.clear_staging(self.run_date)
            return
        held = self._read()
        if held is None:  # released between our attempt and the read: try once more
            if self._create():
                self.wh.clear_staging(self.run_date)
                return
            held = self._read() or {}
        reason = stale_reason(held, self.max_age_hours) if held else None
        if (reason is None or not self._remove_if(str(held.get("token")))
                or not self._create()):
            raise LockError(
                f"run date {self.run_date} of warehouse {self.wh.root} is locked by "
                f"{held.get('owner', '?')}@{held.get('host', '?')} pid {held.get('pid', '?')} "
                f"(command {held.get('command', '?')}) since {held.get('started_at', '?')} "
                f"({self.path}); wait for that run to end, or delete the file if it is gone")
        log.warning("took over the stale run lock %s of %s@%s pid %s since %s: %s",
                    self.path, held.get("owner"), held.get("host"), held.get("pid"),
                    held.get("started_at"), reason)
        self.wh.clear_staging(self.run_date)  # what the dead run left half-written

    def release(self) -> None:
        if not self._remove_if(str(self.info["token"])):
            log.warning("run lock %s was no longer ours at the end of the run", self.path)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment (some containers)
        return str(os.getuid())
