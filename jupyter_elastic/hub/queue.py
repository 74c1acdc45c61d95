"""The gateway's fair queue: requests for workers that do not fit now wait their turn.

Runs inside dask-gateway-server with ``hub.gateway`` (``c.ElasticQuota.when_full =
"queue"``). One ticket per cluster holds the worker count the cluster waits for. The serving
order is per-user round robin: users are ranked by their groups' priority (highest first),
then by when they were last served (never served first, then least recently), then by their
oldest ticket; the order takes each ranked user's first ticket, then each one's second, and
so on. Within a user, tickets keep their arrival order.

Admission walks that order and admits every ticket that fits. A ticket that does not fit
blocks the *scope* that stopped it (``"pool"``, ``"group:<name>"``, ``"user:<name>"``) for
the rest of the walk: a later ticket constrained by a blocked scope waits too, so a large
request is not overtaken forever by small ones in the same pool, while a user who is only
over their own quota does not hold up anyone else.

Imports: the standard library only.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

#: Scope every ticket is in: the pool-wide GPU total.
POOL = "pool"


@dataclass
class Ticket:
    """A cluster waiting for ``count`` workers."""

    cluster: str
    user: str
    count: int
    gpus_per_worker: float
    scopes: frozenset[str]
    priority: int = 0
    #: "scale" (an explicit request, forwarded on admission) or "adaptive" (a heartbeat's).
    kind: str = "scale"
    since: float = field(default_factory=time.monotonic)
    seq: int = 0
    #: Why it waits, for the user (the refusal line it would have had).
    reason: str = ""

    def to_json(self, position: int, length: int, now: float) -> dict[str, Any]:
        return {"cluster": self.cluster, "position": position, "length": length,
                "waited": round(now - self.since, 1), "workers": self.count,
                "gpus": self.count * self.gpus_per_worker, "reason": self.reason}


class FairQueue:
    """Tickets in per-user round-robin order (see the module's docstring)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._tickets: dict[str, Ticket] = {}
        #: user -> when last served (a serving sequence number; one entry per user served)
        self._served: dict[str, int] = {}
        self._seq = itertools.count(1)
        self._serve_seq = itertools.count(1)
        self._order: list[Ticket] | None = None

    def __len__(self) -> int:
        return len(self._tickets)

    def __contains__(self, cluster: object) -> bool:
        return cluster in self._tickets

    def get(self, cluster: str) -> Ticket | None:
        return self._tickets.get(cluster)

    def put(self, ticket: Ticket) -> Ticket:
        """Queue ``ticket``; a cluster already queued keeps its place, with the new count."""
        old = self._tickets.get(ticket.cluster)
        if old is not None:
            ticket.since, ticket.seq = old.since, old.seq
        else:
            ticket.since, ticket.seq = self.clock(), next(self._seq)
        self._tickets[ticket.cluster] = ticket
        self._order = None
        return ticket

    def withdraw(self, cluster: str) -> Ticket | None:
        """Remove a cluster's ticket (stopped, scaled down, or its request replaced)."""
        ticket = self._tickets.pop(cluster, None)
        if ticket is not None:
            self._order = None
        return ticket

    def of_user(self, user: str) -> list[Ticket]:
        return [t for t in self._tickets.values() if t.user == user]

    def length_for(self, user: str) -> int:
        """How many of this user's requests wait (the admins' usage page shows it)."""
        return sum(1 for t in self._tickets.values() if t.user == user)

    def order(self) -> list[Ticket]:
        """Every ticket in serving order."""
        if self._order is None:
            per_user: dict[str, list[Ticket]] = {}
            for ticket in sorted(self._tickets.values(), key=lambda t: t.seq):
                per_user.setdefault(ticket.user, []).append(ticket)
            users = sorted(per_user, key=lambda u: (-max(t.priority for t in per_user[u]),
                                                    self._served.get(u, 0), per_user[u][0].seq))
            order: list[Ticket] = []
            for rank in itertools.zip_longest(*(per_user[u] for u in users)):
                order.extend(t for t in rank if t is not None)
            self._order = order
        return self._order

    def positions(self) -> dict[str, int]:
        """Cluster name -> 1-based place in the serving order."""
        return {t.cluster: i for i, t in enumerate(self.order(), start=1)}

    def report(self, tickets: Iterable[Ticket]) -> list[dict[str, Any]]:
        positions, now, length = self.positions(), self.clock(), len(self._tickets)
        return [t.to_json(positions[t.cluster], length, now) for t in tickets
                if t.cluster in positions]

    def admit(self, blocked_by: Callable[[Ticket], str | None]) -> list[Ticket]:
        """Remove and return the tickets that fit now, in serving order.

        ``blocked_by(ticket)`` answers None when the ticket fits (its grant is then counted
        by the caller before the next call) or the scope that stops it.
        """
        admitted: list[Ticket] = []
        blocked: set[str] = set()
        for ticket in list(self.order()):
            if ticket.scopes & blocked:
                continue
            scope = blocked_by(ticket)
            if scope is not None:
                blocked.add(scope)
                continue
            self.withdraw(ticket.cluster)
            self._served[ticket.user] = next(self._serve_seq)
            admitted.append(ticket)
        return admitted


__all__ = ["POOL", "FairQueue", "Ticket"]
