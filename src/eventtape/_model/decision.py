"""The DCB decision model: small projections over queries -> state -> decide -> append.

Example:
    ```python
    coupon_uses = DecisionProjection(
        Query.of([CouponRedeemed], ["coupon:WELCOME10"]), 0, lambda n, _event: n + 1
    )
    used_by_me = DecisionProjection(
        Query.of([CouponRedeemed], ["coupon:WELCOME10", "customer:789"]), False,
        lambda _seen, _event: True,
    )
    decision = await build_decision(store, uses=coupon_uses, mine=used_by_me)
    if decision.state["mine"] or decision.state["uses"] >= 100:
        raise CouponRefused(...)
    await decision.append([tagged(CouponRedeemed(...), "coupon:WELCOME10", "customer:789")])
    ```

The decision reads once, with the union of the projections' queries, and appends on the
condition that nothing matching that union was stored after the position it read up to, so
the rule holds however many deciders race (the loser gets :class:`AppendConditionFailed`: build
the decision again).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .._core.dcb import AppendCondition, DcbStore, Query, SequencedEvent, TaggedEvent
from .._core.events import Event, Metadata, NewEvent

__all__ = ["Decision", "DecisionProjection", "build_decision"]

S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class DecisionProjection(Generic[S]):
    """State for a decision: the events of ``query``, folded by ``evolve`` from ``initial``."""

    query: Query
    initial: S
    evolve: Callable[[S, SequencedEvent], S]


@dataclass(frozen=True, slots=True)
class Decision:
    """What :func:`build_decision` read: each projection's state, the query, the position."""

    store: DcbStore
    state: Mapping[str, Any]
    query: Query
    position: int

    @property
    def condition(self) -> AppendCondition:
        """Fail if anything the decision read was changed since it read it."""
        return AppendCondition(self.query, self.position)

    async def append(
        self,
        events: Sequence[Event | NewEvent[Event] | TaggedEvent],
        *,
        metadata: Metadata | None = None,
    ) -> int:
        """Append ``events`` on :attr:`condition`; returns the last event's position.

        Raises:
            AppendConditionFailed: Someone changed what the decision depends on; build it
                again and decide again.
        """
        return await self.store.dcb_append(events, condition=self.condition, metadata=metadata)


async def build_decision(store: DcbStore, **projections: DecisionProjection[Any]) -> Decision:
    """Read the union of the projections' queries once and fold each projection's events."""
    if not projections:
        raise ValueError("build_decision needs at least one projection")
    query = Query()
    for index, projection in enumerate(projections.values()):
        query = projection.query if index == 0 else query | projection.query
    read = await store.dcb_read(query)
    state = {name: projection.initial for name, projection in projections.items()}
    for item in read.events:
        for name, projection in projections.items():
            if projection.query.matches(item.event_type, item.tags):
                state[name] = projection.evolve(state[name], item)
    return Decision(store, state, query, read.position)
