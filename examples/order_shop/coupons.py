"""Coupons: a rule across entities, decided with Dynamic Consistency Boundaries.

Each customer may redeem a coupon once, and a coupon has a global redemption limit. As an
aggregate, every redemption would queue on one coupon stream; here a redemption reads the
coupon's redemptions (and this customer's), decides, and appends on the condition that none of
those changed since it read them. Racing redemptions never exceed the limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from eventtape import (
    AppendConditionFailed,
    DcbStore,
    DecisionProjection,
    Event,
    EventRegistry,
    Metadata,
    Query,
    build_decision,
    tagged,
)

__all__ = ["CouponRedeemed", "CouponRefused", "Coupons", "register_coupon_events"]

DEFAULT_LIMITS = {"WELCOME10": 100}


class CouponRedeemed(Event):
    """A customer redeemed a coupon on an order."""

    __event_tags__ = ("coupon:{code}", "customer:{user_id}")

    code: str
    user_id: str
    order_id: str


class CouponRefused(Exception):
    """The coupon is unknown, used up, or already redeemed by this customer."""


def register_coupon_events(registry: EventRegistry) -> None:
    """Teach the shop's registry the coupon events (once; again is harmless)."""
    if CouponRedeemed not in registry:
        registry.register(CouponRedeemed)


@dataclass
class Coupons:
    """The coupons on offer: code -> how many redemptions in all."""

    limits: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_LIMITS))

    async def redeem(
        self, store: DcbStore, code: str, user_id: str, order_id: str, *, actor: str
    ) -> int:
        """Redeem ``code`` for ``user_id`` on ``order_id``; return the event's position.

        Redeeming again on the same order (a retried request) is a no-op that returns 0.

        Raises:
            CouponRefused: Unknown, used up, or already used by this customer.
        """
        limit = self.limits.get(code)
        if limit is None:
            raise CouponRefused(f"unknown coupon {code!r}")
        uses = DecisionProjection(
            Query.of([CouponRedeemed], [f"coupon:{code}"]), 0, lambda n, _event: n + 1
        )
        mine = DecisionProjection(
            Query.of([CouponRedeemed], [f"coupon:{code}", f"customer:{user_id}"]),
            None,
            lambda _seen, seen: seen.event.order_id,
        )
        while True:
            decision = await build_decision(store, uses=uses, mine=mine)
            if decision.state["mine"] == order_id:
                return 0  # a retry of the same order (Idempotency-Key): already redeemed on it
            if decision.state["mine"] is not None:
                raise CouponRefused(f"coupon {code!r} was already redeemed by this customer")
            if decision.state["uses"] >= limit:
                raise CouponRefused(f"coupon {code!r} is used up")
            try:
                return await decision.append(
                    [tagged(CouponRedeemed(code=code, user_id=user_id, order_id=order_id))],
                    metadata=Metadata(actor=actor),
                )
            except AppendConditionFailed:
                continue  # someone redeemed it meanwhile: decide again on what is stored now
