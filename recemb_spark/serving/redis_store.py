"""Versioned tables in Redis: key layout, connection, the executors' batch writer, the switch.

Key layout (``P`` = ``export.prefix``, ``M`` = model, ``V`` = version)::

    P:M:current              string: the version readers use (the one pointer per model)
    P:M:versions             sorted set: every version written, scored by its start time
    P:M:V:meta               hash: run_date, status (writing/complete/retired), counts, dim
    P:M:V:acks               hash: "<kind>:<partition>" -> keys that partition found present
    P:M:V:item:<item_id>     item vector (float32 little-endian, see codec.py)
    P:M:V:user:<user_id>     user vector
    P:M:V:nbr:<item_id>      the item's neighbours (ranked list, see codec.py)
    P:M:V:cand:<user_id>     the user's candidates (ranked list)

A version is ``<run date>.<UTC start time>-<4 hex>`` (e.g. ``2026-11-23.20261124T031502Z-9f1c``):
every export, also a re-export of the same date, writes a new one. Keys of a version carry no
expiry while it may be read; a version is *retired* (its keys get a short expiry) only once
another version is current. Readers read ``P:M:current`` first, then the version's keys, so
they never see a half-written version. One export at a time per prefix and model.
"""
from __future__ import annotations

import datetime as dt
import itertools
import os
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from ..config import ExportConfig
from ..errors import ConfigError, RecembError
from .codec import encode_ranked_lists, encode_vectors

#: what the export writes, by config switch -> the key segment of its values
KINDS = {"items": "item", "users": "user", "neighbors": "nbr", "user_candidates": "cand"}
#: kinds whose values are ranked lists (the others are vectors)
RANKED = {"neighbors", "user_candidates"}
WRITE_RESULT_SCHEMA = "kind string, partition int, rows long, present long"
SCAN_COUNT = 1000


class ExportError(RecembError):
    """The export could not write or verify a version (the pointer was not switched)."""

    exit_code = 1


# --------------------------------------------------------------------------------------------
# connection


@dataclass(frozen=True)
class RedisTarget:
    """Where to connect. ``password`` comes from the environment variable named in config and
    is left out of ``repr`` (so it cannot reach a log line or a manifest)."""

    host: str
    port: int
    db: int = 0
    tls: bool = False
    tls_ca_file: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    connect_timeout: float = 5.0
    socket_timeout: float = 30.0
    retries: int = 3

    @classmethod
    def from_config(cls, cfg: ExportConfig,
                    environ: Mapping[str, str] | None = None) -> RedisTarget:
        """The target of ``cfg``; ConfigError when ``password_env`` names an unset variable."""
        environ = os.environ if environ is None else environ
        password = None
        if cfg.password_env:
            password = environ.get(cfg.password_env)
            if password is None:
                raise ConfigError(f"config key 'export.password_env' names the environment "
                                  f"variable {cfg.password_env}, which is not set")
        return cls(cfg.host, cfg.port, cfg.db, cfg.tls, cfg.tls_ca_file, cfg.username, password,
                   cfg.connect_timeout, cfg.socket_timeout, cfg.retries)

    def describe(self) -> str:
        """``host:port/db`` (+ tls, user): for logs and manifests, never the password."""
        extra = (" tls" if self.tls else "") + (f" user {self.username}" if self.username else "")
        auth = " (password from env)" if self.password is not None else ""
        return f"{self.host}:{self.port}/{self.db}{extra}{auth}"

    def client(self) -> redis.Redis:
        """A new client; dropped connections are retried ``retries`` times with a short
        exponential back-off (8 ms doubling up to 0.5 s)."""
        kwargs: dict[str, Any] = {}
        if self.tls:
            kwargs.update(ssl=True, ssl_ca_certs=self.tls_ca_file)
        return redis.Redis(host=self.host, port=self.port, db=self.db, username=self.username,
                           password=self.password, socket_timeout=self.socket_timeout,
                           socket_connect_timeout=self.connect_timeout,
                           retry=Retry(ExponentialBackoff(), self.retries),
                           retry_on_error=[redis.ConnectionError, redis.TimeoutError], **kwargs)

    def scrub(self, text: str) -> str:
        """``text`` with the password (should it ever appear) replaced by ``***``."""
        return text.replace(self.password, "***") if self.password else text


# --------------------------------------------------------------------------------------------
# keys and versions


def pointer_key(prefix: str, model: str) -> str:
    return f"{prefix}:{model}:current"


def registry_key(prefix: str, model: str) -> str:
    return f"{prefix}:{model}:versions"


def version_key(prefix: str, model: str, version: str, *rest: str) -> str:
    """``P:M:V`` followed by ``rest`` joined by ``:`` (``meta``, ``acks``, ``item``, id, ...)."""
    return ":".join([prefix, model, version, *rest])


def new_version(run_date: str, now: dt.datetime | None = None) -> str:
    """A fresh version name for ``run_date``: the date, the UTC start time, 4 random hex."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return f"{run_date}.{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"


def version_date(version: str) -> str:
    """The run date a version name starts with."""
    return version.split(".", 1)[0]


def glob_escape(text: str) -> str:
    """``text`` with Redis glob characters escaped (for ``SCAN MATCH``)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _text(value: Any) -> Any:
    return value.decode("utf-8") if isinstance(value, bytes) else value


class VersionStore:
    """Driver-side bookkeeping of versions for one prefix: begin, verify, switch, retire."""

    def __init__(self, client: redis.Redis, prefix: str):
        self.r = client
        self.prefix = prefix

    def current(self, model: str) -> str | None:
        """The version ``P:M:current`` names, or None."""
        return _text(self.r.get(pointer_key(self.prefix, model)))

    def meta(self, model: str, version: str) -> dict[str, str]:
        raw = self.r.hgetall(version_key(self.prefix, model, version, "meta"))
        return {_text(k): _text(v) for k, v in raw.items()}

    def versions(self, model: str) -> list[str]:
        """Every registered version of ``model``, oldest first."""
        return [_text(v) for v in self.r.zrange(registry_key(self.prefix, model), 0, -1)]

    def begin(self, model: str, version: str, run_date: str) -> None:
        """Register ``version`` (status ``writing``) before any of its keys is written, so a
        failed export's leftovers are found and retired later."""
        pipe = self.r.pipeline(transaction=True)
        pipe.zadd(registry_key(self.prefix, model), {version: time.time()})
        pipe.hset(version_key(self.prefix, model, version, "meta"),
                  mapping={"run_date": run_date, "status": "writing",
                           "started_at": dt.datetime.now(dt.timezone.utc).isoformat()})
        pipe.execute()

    def acknowledged(self, model: str, version: str, kind: str) -> int:
        """Keys of ``kind`` the writing partitions found present (sum over partitions)."""
        raw = self.r.hgetall(version_key(self.prefix, model, version, "acks"))
        return sum(int(v) for k, v in raw.items() if _text(k).split(":", 1)[0] == kind)

    def complete(self, model: str, version: str, info: dict[str, Any]) -> None:
        """Mark ``version`` verified and complete (``info``: counts, dim, ... as strings)."""
        self.r.hset(version_key(self.prefix, model, version, "meta"),
                    mapping={**{k: str(v) for k, v in info.items()}, "status": "complete",
                             "finished_at": dt.datetime.now(dt.timezone.utc).isoformat()})

    def switch(self, versions: dict[str, str]) -> dict[str, str | None]:
        """Point every model of ``versions`` at its version in one MULTI/EXEC (all or none);
        return the versions they named before."""
        pipe = self.r.pipeline(transaction=True)
        for model, version in versions.items():
            pipe.set(pointer_key(self.prefix, model), version, get=True)
        return {m: _text(old) for m, old in zip(versions, pipe.execute(), strict=True)}

    def retire(self, model: str, version: str, grace_seconds: int) -> int:
        """Give every key of ``version`` an expiry of ``grace_seconds`` (0: delete now) and
        drop it from the registry; return the keys touched. Walks the key space with SCAN
        (pages of 1000, nothing kept), never KEYS."""
        if self.current(model) == version:
            raise ExportError(f"refusing to retire {model} version {version}: it is current")
        meta_key = version_key(self.prefix, model, version, "meta")
        if self.r.exists(meta_key):
            self.r.hset(meta_key, "status", "retired")
        match = glob_escape(version_key(self.prefix, model, version)) + ":*"
        touched = 0
        page: list[bytes] = []
        for key in self.r.scan_iter(match=match, count=SCAN_COUNT):
            page.append(key)
            if len(page) >= SCAN_COUNT:
                touched += self._expire(page, grace_seconds)
                page = []
        touched += self._expire(page, grace_seconds)
        self.r.zrem(registry_key(self.prefix, model), version)
        return touched

    def _expire(self, keys: list[bytes], grace_seconds: int) -> int:
        if not keys:
            return 0
        if grace_seconds == 0:
            return int(self.r.unlink(*keys))
        pipe = self.r.pipeline(transaction=False)
        for key in keys:
            pipe.expire(key, grace_seconds)
        return sum(bool(x) for x in pipe.execute())

    def stale_versions(self, model: str, run_date: str, keep_days: int) -> list[str]:
        """Versions to retire after ``model`` switched to a version of ``run_date``: any not
        complete (a failed export's leftovers), older versions of the same date, and those of
        dates at least ``keep_days`` days before ``run_date``. Never the current one."""
        current = self.current(model)
        day = dt.date.fromisoformat(run_date)
        stale = []
        for version in self.versions(model):
            if version == current:
                continue
            meta = self.meta(model, version)
            vdate = meta.get("run_date") or version_date(version)
            try:
                age = (day - dt.date.fromisoformat(vdate)).days
            except ValueError:
                age = keep_days
            if meta.get("status") != "complete" or vdate == run_date or age >= keep_days:
                stale.append(version)
        return stale


# --------------------------------------------------------------------------------------------
# the executors' writer


def _bulk(value: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


def pack_mset_exists(keys: list[bytes], values: list[bytes]) -> bytes:
    """``MSET k1 v1 k2 v2 ...`` followed by ``EXISTS k1 k2 ...``, packed as RESP in one buffer
    (packing by hand: redis-py's general packer took most of the writer's time)."""
    packed_keys = [_bulk(k) for k in keys]
    pairs = itertools.chain.from_iterable(zip(packed_keys, map(_bulk, values), strict=True))
    return b"".join([b"*%d\r\n$4\r\nMSET\r\n" % (2 * len(keys) + 1), *pairs,
                     b"*%d\r\n$6\r\nEXISTS\r\n" % (len(keys) + 1), *packed_keys])


class PipelinedWriter:
    """Sends packed ``MSET`` + ``EXISTS`` batches on one connection, with up to ``depth``
    batches in flight (the server works on one while Python packs the next).

    ``present`` sums the ``EXISTS`` replies. A dropped connection is re-opened (AUTH, TLS and
    db selection as configured) and every unanswered batch is sent again — writes are
    idempotent — up to ``retries`` times in a row with an exponential back-off; an error reply
    (OOM, NOAUTH, ...) raises at once.
    """

    def __init__(self, client: redis.Redis, retries: int, depth: int = 2):
        self.client = client
        self.conn = client.connection_pool.get_connection()
        self.retries = retries
        self.depth = depth
        self.pending: deque[bytes] = deque()
        self.present = 0
        self._failures = 0

    def send(self, payload: bytes) -> None:
        self.pending.append(payload)
        self._guard(lambda: self.conn.send_packed_command([payload], check_health=False),
                    done_by_resend=True)
        while len(self.pending) > self.depth:
            self._guard(self._read_one, done_by_resend=False)

    def flush(self) -> int:
        """Wait for every reply; return the keys found present."""
        while self.pending:
            self._guard(self._read_one, done_by_resend=False)
        return self.present

    def close(self) -> None:
        self.conn.disconnect()
        self.client.connection_pool.release(self.conn)

    def _read_one(self) -> None:
        self.conn.read_response()  # MSET: OK (an error reply raises ResponseError)
        self.present += int(self.conn.read_response())
        self.pending.popleft()
        self._failures = 0

    def _guard(self, step: Callable[[], None], done_by_resend: bool) -> None:
        """Run ``step``; after a dropped connection reconnect, resend every unanswered batch
        and (unless the resend did what ``step`` was for) run ``step`` again."""
        try:
            step()
            return
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            error = exc
        while True:
            self._failures += 1
            if self._failures > self.retries:
                raise error
            self.conn.disconnect()
            time.sleep(min(0.512, 0.008 * 2 ** self._failures))
            try:
                for payload in self.pending:  # reconnects on the first send
                    self.conn.send_packed_command([payload], check_health=False)
                if not done_by_resend:
                    step()
                return
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                error = exc


def partition_writer(target: RedisTarget, prefix: str, model: str, version: str, kind: str,
                     batch_size: int) -> Callable[[Iterator[pa.RecordBatch]],
                                                  Iterator[pa.RecordBatch]]:
    """The ``mapInArrow`` function that writes one partition of ``kind`` rows to Redis.

    Input batches: ``(id, vector)`` for vector kinds, ``(id, ids, scores)`` for ranked kinds.
    Every ``batch_size`` rows become one ``MSET`` of the keys plus an ``EXISTS`` of the same
    keys, whose reply counts the keys the server holds, pipelined on one connection
    (:class:`PipelinedWriter`; no MULTI). At the end the partition records that count in
    ``P:M:V:acks`` under ``<kind>:<partition>`` (a retried task overwrites its own entry) and
    yields one row ``(kind, partition, rows, present)``. Nothing is collected.
    """
    key_prefix = (version_key(prefix, model, version, KINDS[kind]) + ":").encode("utf-8")
    acks_key = version_key(prefix, model, version, "acks")
    ranked = kind in RANKED

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        assert ctx is not None  # run() runs in a Spark task
        part = ctx.partitionId()
        rows = 0
        client = target.client()
        try:
            writer = PipelinedWriter(client, target.retries)
            try:
                for batch in batches:
                    ids = batch.column(0).to_pylist()
                    values = (encode_ranked_lists(batch.column(1), batch.column(2)) if ranked
                              else encode_vectors(batch.column(1)))
                    for start in range(0, len(ids), batch_size):
                        keys = [key_prefix + i.encode("utf-8")
                                for i in ids[start:start + batch_size]]
                        writer.send(pack_mset_exists(keys, values[start:start + batch_size]))
                        rows += len(keys)
                present = writer.flush()
            finally:
                writer.close()
            client.hset(acks_key, f"{kind}:{part}", present)
        finally:
            client.close()
        yield pa.RecordBatch.from_pydict(
            {"kind": [kind], "partition": [part], "rows": [rows], "present": [present]},
            schema=pa.schema([("kind", pa.string()), ("partition", pa.int32()),
                              ("rows", pa.int64()), ("present", pa.int64())]))

    return run
