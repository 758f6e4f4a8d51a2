"""Prometheus ``GET /metrics``: eventtape's OpenTelemetry metrics in the text exposition format.

When ``opentelemetry-sdk`` and ``opentelemetry-exporter-prometheus`` are installed (the
``prometheus`` extra, part of ``shop``) and ``Settings.metrics`` is on, the shop sets a meter
provider whose reader is a Prometheus collector in a registry of its own; the route renders it.
Without them the shop runs as before and ``/metrics`` answers 503 saying what to install.

Only admins may read it (``Authorization: Bearer <admin token>``; Prometheus sends one with
``authorization: {credentials: ...}`` in its scrape config): the series hold no personal data
(categories and projection names, never stream ids), but order rates and backlogs are the
business's own figures. The token check comes first, so an anonymous caller cannot even learn
whether metrics are on.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse, Response

from .api_common import Actor

__all__ = ["MISSING", "ShopMetrics", "mount_metrics"]

logger = logging.getLogger("order_shop.metrics")

MISSING = (
    "metrics need opentelemetry-sdk and opentelemetry-exporter-prometheus:"
    " pip install 'eventtape[prometheus]'"
)


@dataclasses.dataclass
class ShopMetrics:
    """The shop's Prometheus registry, or why there is none.

    Attributes:
        registry: The ``prometheus_client`` registry the route renders (``None``: off).
        off_because: Why metrics are off, as the 503 says it.
    """

    registry: Any = None
    off_because: str = ""

    @classmethod
    def install(cls, enabled: bool) -> ShopMetrics:
        """Set a meter provider exporting to a Prometheus registry, if possible.

        Call it before the shop starts its runners: they look for the provider when they start.
        """
        if not enabled:
            return cls(off_because="metrics are switched off (ORDER_SHOP_METRICS=off)")
        try:
            from opentelemetry import metrics
            from opentelemetry.exporter.prometheus import PrometheusMetricReader
            from opentelemetry.sdk.metrics import MeterProvider
            from prometheus_client import CollectorRegistry
        except ImportError:
            return cls(off_because=MISSING)
        current = type(metrics.get_meter_provider()).__name__
        if not current.startswith(("_Proxy", "Proxy", "NoOp")):
            # The application set its own provider (opentelemetry-instrument, say): its
            # readers export eventtape's metrics; a provider is set once per process.
            return cls(off_because="a meter provider was set before the shop: export from it")
        registry = CollectorRegistry()
        provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)])
        metrics.set_meter_provider(provider)
        return cls(registry=registry)


def mount_metrics(app: FastAPI, shop: Any) -> None:
    """Add ``GET /metrics`` (admins only), setting up the exporter if ``shop.settings.metrics``."""
    state = app.state.metrics = ShopMetrics.install(shop.settings.metrics)

    # Not in the OpenAPI document, which describes the JSON API (every answer a typed JSON
    # body): this is a Prometheus endpoint, documented in docs/order-shop.md.
    @app.get("/metrics", response_class=Response, include_in_schema=False)
    async def prometheus_metrics(who: Actor) -> Response:
        if not who.startswith("admin:"):
            raise HTTPException(403, "only an admin may read the metrics")
        if state.registry is None:
            return JSONResponse({"detail": state.off_because}, status_code=503)
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        # Fresh gauges for this scrape (the runners also measure every few seconds). If the
        # store or the read model is away, answer with the last values rather than nothing:
        # the counters (conflicts, errors) are what tell the story of an outage.
        for runner in (shop.projections, shop.sagas):
            try:
                await runner.refresh_metrics()
            except Exception as failure:
                logger.warning("measuring the runners for /metrics failed: %r", failure)
        return Response(generate_latest(state.registry), media_type=CONTENT_TYPE_LATEST)
