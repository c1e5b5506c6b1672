"""One active replica among several: a lease held through a key of a JetStream KV bucket.

A service whose work must not run twice at once (the learner: its per-workspace trainer
and policy versions) runs every replica, and only the lease holder consumes; the others
are hot standbys. The lease is the key ``<name>`` of the bucket ``<namespace>_LEASES``
(bucket TTL ``ttl_s``): the holder keeps it alive by updating it on its revision every
``ttl_s / 3``, so two replicas can never both succeed (``update`` with ``last=`` is a
compare-and-set in the stream). A holder that stops renewing — crashed, killed, cut off —
loses the key when its TTL passes, and a standby's ``create`` then succeeds. A holder that
cannot renew steps down at once, before its TTL could let another take over.

Example:
    >>> lease = Lease(Catalog("t1"), "learner", holder="learner-7f3a", ttl_s=9.0)  # doctest: +SKIP
    >>> await lease.run(nc, on_acquired=start_consuming, on_lost=stop_consuming)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js.api import KeyValueConfig
from nats.js.errors import BucketNotFoundError, KeyValueError, KeyWrongLastSequenceError
from nats.js.errors import Error as JetStreamError
from nats.js.kv import KeyValue

from tally.subjects import Catalog

log = structlog.get_logger(__name__)

#: The KV bucket (base name) holding every lease of an installation.
LEASES = "LEASES"

Hook = Callable[[], Awaitable[None]]


def bucket_name(catalog: Catalog) -> str:
    """The namespace's lease bucket (``TALLY_LEASES``, ``T1_LEASES``)."""
    return catalog.stream(LEASES)


class Lease:
    """The right of one replica to do a role's work.

    Args:
        catalog: the namespace (the bucket is named from it).
        name: what the lease is for (the key): ``learner``.
        holder: this replica's id (unique per process).
        ttl_s: how long a silent holder keeps the lease; a standby takes over after it.
        replicas: copies of the bucket in a NATS cluster (``TALLY_STREAM_REPLICAS``).
    """

    def __init__(
        self, catalog: Catalog, name: str, *, holder: str, ttl_s: float, replicas: int = 1
    ) -> None:
        self.catalog = catalog
        self.name = name
        self.holder = holder
        self.ttl_s = ttl_s
        self.replicas = replicas
        self._revision: int | None = None
        self._renewed_at = 0.0
        #: Terms this replica has held the lease.
        self.terms = 0

    @property
    def held(self) -> bool:
        """Whether this replica holds the lease now (renewed within its TTL)."""
        return self._revision is not None and time.monotonic() - self._renewed_at < self.ttl_s

    async def bucket(self, nc: NATS) -> KeyValue:
        js = nc.jetstream()
        name = bucket_name(self.catalog)
        try:
            return await js.key_value(name)
        except BucketNotFoundError:
            config = KeyValueConfig(bucket=name, history=1, ttl=self.ttl_s, replicas=self.replicas)
            return await js.create_key_value(config)

    async def try_acquire(self, kv: KeyValue) -> bool:
        """Take the lease if nobody holds it (or this holder already does). The caller of
        a successful attempt outside :meth:`run` starts the holder's work itself."""
        try:
            revision = await kv.create(self.name, self.holder.encode())
        except KeyWrongLastSequenceError:
            entry = await kv.get(self.name)
            if entry.value is None or entry.value.decode() != self.holder:
                return False
            revision = entry.revision or 0  # ours from before a reconnect: adopt it
        self._revision = revision
        self._renewed_at = time.monotonic()
        self.terms += 1
        return True

    async def renew(self, kv: KeyValue) -> bool:
        """Keep the lease; False (and no longer held) if it was lost."""
        try:
            self._revision = await kv.update(self.name, self.holder.encode(), last=self._revision)
        except (KeyWrongLastSequenceError, KeyValueError, JetStreamError, NatsError, TimeoutError):
            self._revision = None
            return False
        self._renewed_at = time.monotonic()
        return True

    async def release(self, kv: KeyValue) -> None:
        """Give the lease up now (a clean stop): a standby need not wait for the TTL."""
        if self._revision is not None:
            try:
                await kv.delete(self.name, last=self._revision)
            except (KeyValueError, JetStreamError, NatsError, TimeoutError) as exc:
                log.warning("lease_release_failed", lease=self.name, error=repr(exc))
            self._revision = None

    async def run(self, nc: NATS, *, on_acquired: Hook, on_lost: Hook) -> None:
        """Hold the lease whenever possible, until cancelled: ``on_acquired`` runs when
        this replica becomes the holder, ``on_lost`` when it stops being one (and when
        the loop ends while holding)."""
        kv = await self.bucket(nc)
        try:
            while True:
                if self._revision is None:
                    if await self.try_acquire(kv):
                        log.info("lease_acquired", lease=self.name, holder=self.holder)
                        await on_acquired()
                elif not await self.renew(kv):
                    log.warning("lease_lost", lease=self.name, holder=self.holder)
                    await on_lost()
                await asyncio.sleep(self.ttl_s / 3)
        finally:
            if self._revision is not None:
                await on_lost()
                await self.release(kv)
