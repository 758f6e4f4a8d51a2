"""The 2 a.m. story in a real browser: Playwright driving Debian's Chromium against the shop.

Skipped, with the reason, when the ``playwright`` package or ``/usr/bin/chromium`` is missing
(``apt-get install -y chromium``). Set ``EVENTTAPE_SCREENSHOTS=docs/images`` to refresh the
screenshots in the docs.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from examples.order_shop.app import create_app
from examples.order_shop.runtime import Settings, Shop

from eventtape import StoreUnavailable

CHROMIUM = os.environ.get("EVENTTAPE_CHROMIUM", "/usr/bin/chromium")
playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is not installed (pip install -e .[dev])"
)
if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
    pytest.skip(
        f"no Chromium at {CHROMIUM}: apt-get install -y chromium to run the browser tests",
        allow_module_level=True,
    )

ADMIN, ALICE = "demo-admin", "demo-customer-789"
HOSTILE = '<script>document.title="pwned"</script><b>bold?</b>'


class RunningShop:
    """The shop served by uvicorn on a loopback port, in a thread with its own event loop."""

    def __init__(self) -> None:
        import uvicorn

        self.shop = Shop(Settings(store="memory"))
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            create_app(shop=self.shop), host="127.0.0.1", port=self.port, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> RunningShop:
        self.thread.start()
        for _ in range(200):
            if self.server.started:
                return self
            time.sleep(0.05)
        raise RuntimeError("the shop did not start")

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(20)

    def call(self, method: str, path: str, token: str, body: Any = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.request(method, self.url + path, json=body, headers=headers, timeout=10)

    def wait_for(self, order_id: str, *statuses: str) -> None:
        for _ in range(200):
            response = self.call("GET", f"/orders/{order_id}", ADMIN)
            if response.status_code == 200 and response.json()["status"] in statuses:
                return
            time.sleep(0.05)
        raise AssertionError(f"order {order_id} never became {statuses}")


@pytest.fixture(scope="module")
def shop() -> Iterator[RunningShop]:
    with RunningShop() as running:
        running.call("POST", "/products", ADMIN, {"sku": "mug", "name": "Mug", "price": "7.50"})
        running.call("POST", "/products/mug/restock", ADMIN, {"quantity": 10})
        running.call("POST", "/wallets/789/deposit", ALICE, {"amount": "50.00"})
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


def signed_in(browser: Any, shop: RunningShop, token: str) -> Any:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(shop.url + "/console/")
    assert page.url.endswith("/console/login")
    page.fill("input[name=token]", token)
    page.click("button[type=submit]:has-text('sign in')")
    page.wait_for_url(shop.url + "/console/")
    return page


def shoot(page: Any, name: str) -> None:
    target = os.environ.get("EVENTTAPE_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(target) / f"console-{name}.png"), full_page=False)


def test_the_2am_story(shop: RunningShop, browser: Any) -> None:
    placed = shop.call("POST", "/orders", ALICE, {"items": [{"sku": "mug", "quantity": 2}]})
    order_id = placed.json()["order_id"]
    shop.wait_for(order_id, "paid")
    shop.call("POST", f"/orders/{order_id}/cancel", ADMIN, {"reason": "customer called support"})
    shop.wait_for(order_id, "cancelled")

    page = signed_in(browser, shop, ADMIN)
    shoot(page, "find")
    page.fill("input[name=id]", f"order-{order_id}")
    page.click("button:has-text('open')")
    cancelled = page.locator("tr#v4")
    assert "OrderCancelled" in cancelled.inner_text()
    assert "admin:support-001" in cancelled.inner_text()
    cancelled.locator("summary").click()
    changed = cancelled.locator("table.state tr.changed", has_text="status")
    assert '"paid"' in changed.locator("td").nth(0).inner_text()  # the state before
    assert '"cancelled"' in changed.locator("td").nth(1).inner_text()
    shoot(page, "timeline")

    cancelled.locator("a[href^='correlations/']").click()
    story = page.locator("ol.story").inner_text()
    for step in ("OrderCancelled", "InventoryReleased", "PaymentRefunded"):
        assert step in story
    assert story.index("OrderCancelled") < story.index("PaymentRefunded")
    shoot(page, "correlation")
    page.close()


def test_admin_retries_a_parked_event_a_customer_cannot(shop: RunningShop, browser: Any) -> None:
    wallets = shop.shop.wallets
    working = wallets.load

    async def payment_service_down(*args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("payment service down")

    wallets.load = payment_service_down  # type: ignore[method-assign]
    try:
        placed = shop.call("POST", "/orders", ALICE, {"items": [{"sku": "mug", "quantity": 1}]})
        order_id = placed.json()["order_id"]
        for _ in range(300):
            if "payment service down" in shop.call("GET", "/console/ops", ADMIN).text:
                break
            time.sleep(0.05)
    finally:
        wallets.load = working  # type: ignore[method-assign]

    customer = signed_in(browser, shop, ALICE)
    customer.click("text=projections & sagas")
    assert "payment service down" in customer.inner_text("tr.parked")
    assert customer.locator("tr.parked button").count() == 0  # read-only
    # Even a hand-made POST is refused.
    refused = customer.request.post(
        shop.url + "/console/ops/parked/retry",
        form={"kind": "saga", "name": "fulfillment", "position": "1", "csrf": "x"},
    )
    assert refused.status == 403
    customer.close()

    admin = signed_in(browser, shop, ADMIN)
    admin.click("text=projections & sagas")
    shoot(admin, "ops")
    admin.locator("tr.parked button", has_text="retry").click()
    admin.wait_for_url(shop.url + "/console/ops")
    assert admin.locator("tr.parked").count() == 0
    shop.wait_for(order_id, "paid")
    admin.goto(
        shop.url + "/console/search?actor=admin:support-001&type=eventtape.ConsoleActionTaken"
    )
    assert "fulfillment@" in admin.inner_text("table.events")
    admin.close()


def test_hostile_event_data_is_shown_as_text(shop: RunningShop, browser: Any) -> None:
    placed = shop.call("POST", "/orders", ALICE, {"items": [{"sku": "mug", "quantity": 1}]})
    order_id = placed.json()["order_id"]
    shop.wait_for(order_id, "paid")
    shop.call("POST", f"/orders/{order_id}/cancel", ALICE, {"reason": HOSTILE})
    shop.wait_for(order_id, "cancelled")
    page = signed_in(browser, shop, ADMIN)
    page.goto(f"{shop.url}/console/streams/order-{order_id}")
    assert page.title() != "pwned"
    assert page.locator("tr#v4 b", has_text="bold?").count() == 0
    assert "<script>" in page.locator("tr#v4 pre.data").inner_text()
    shoot(page, "hostile")
    page.close()
