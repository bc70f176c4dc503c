"""The dashboard in a real browser: Debian's Chromium (``/usr/bin/chromium``) driven by
Playwright, against the real service and the tests' CouchDB. Never a downloaded browser; without
Chromium or Playwright these tests are skipped, saying why.

Each page is photographed (1280x800) into ``$COUCHDB_EVENTS_SCREENSHOTS`` when set (the README's
``docs/screenshots``), else into a temporary folder.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.nginx import NginxProxy, nginx_binary_fixture  # noqa: F401 - nginx_binary
from tests.test_activations_e2e import activation_prefixes, final_record, start  # noqa: F401
from tests.test_daemon_e2e import Daemon, StartDaemon, start_daemon  # noqa: F401
from tests.test_reverse_proxy import HaproxyProxy, find_haproxy

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
VIEWPORT = {"width": 1280, "height": 800}
WAIT = 15_000  # ms for what the page shows after a poll or two

WORK_PY = """
import json, sys, time
REFUSED = "550 mailbox unavailable"
for line in sys.stdin:
    message = json.loads(line)
    arguments = message["arguments"]
    print(f"working on {message['id']}", file=sys.stderr, flush=True)
    print(f"step 1 of {message['id']}", flush=True)
    time.sleep(float(arguments.get("sleep", 0)))
    if arguments.get("fail"):
        print(f"smtp relay refused the message: {REFUSED}", file=sys.stderr, flush=True)
        time.sleep(0.1)
        print(json.dumps({"error": "relay_refused", "reason": REFUSED}), flush=True)
    else:
        time.sleep(0.1)
        print(json.dumps({"sent": True, "id": message["id"]}), flush=True)
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is missing (Debian: apt-get install chromium; ./run-tests does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is missing (pip install -e '.[test]')")
    with sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = os.environ.get("COUCHDB_EVENTS_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def new_page(browser: Any, daemon: Daemon) -> Any:
    """A page logged in as couch_url's admin (a real CouchDB), through the Basic prompt."""
    parts = urllib.parse.urlsplit(daemon.couch_url)
    credentials = None
    if parts.username:
        credentials = {
            "username": urllib.parse.unquote(parts.username),
            "password": urllib.parse.unquote(parts.password or ""),
        }
    context = browser.new_context(
        viewport=VIEWPORT, http_credentials=credentials, color_scheme="light"
    )
    page = context.new_page()
    page.set_default_timeout(WAIT)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.errors = errors
    return page


def serving(start: StartDaemon) -> Daemon:  # noqa: F811
    daemon = start()
    daemon.worker("mailer", {"w.py": WORK_PY}, type="python", delegate="w.py", mode="reply",
                  processes=2)  # fmt: skip
    daemon.event({"_id": "send_email", "workers": {"mailer": {"to": "ann@example.com"}}})
    daemon.event({"_id": "bounce", "workers": {"mailer": {"fail": True}}})
    daemon.event({"_id": "slow_report", "workers": {"mailer": {"sleep": 30}}})
    for event in ("send_email", "bounce", "slow_report"):
        daemon.wait_loaded(event)
    return daemon


def fire(daemon: Daemon, event: str) -> str:
    status, _h, body = daemon.fire(f"/{event}", method="POST", body={})
    assert status == 202, body
    run_id: str = body["runs"][0]["id"]
    return run_id


def open_dashboard(page: Any, url: str) -> None:
    response = page.goto(url)
    assert response is not None and response.ok, response and response.status
    try:
        page.wait_for_selector("#live.on")
    except Exception as exc:
        banner = page.inner_text("#banner") if page.is_visible("#banner") else ""
        raise AssertionError(f"the dashboard is not live: {banner!r} {page.errors}") from exc


def shot(page: Any, shots: Path, name: str) -> None:
    page.wait_for_timeout(300)  # let the last poll's drawing settle
    page.screenshot(path=str(shots / f"{name}.png"))


def test_a_fired_run_appears_without_a_reload_and_opens(
    browser: Any,
    start: StartDaemon,  # noqa: F811
    shots: Path,
) -> None:
    daemon = serving(start)
    page = new_page(browser, daemon)
    open_dashboard(page, daemon.url + "_dashboard")  # the redirect adds the slash
    assert page.url.endswith("/_dashboard/#/overview") or page.url.endswith("/_dashboard/")
    page.evaluate("window.__loaded = true")  # gone if the page reloads
    page.click("a.nav[data-page=runs]")
    page.wait_for_selector("text=No runs yet.")
    run_id = fire(daemon, "send_email")
    row = page.wait_for_selector(f"tr[data-id='{run_id}']")
    page.wait_for_selector(f"tr[data-id='{run_id}'] .badge.s-succeeded")
    assert page.evaluate("window.__loaded") is True
    row.click()
    page.wait_for_selector(f".run[data-id='{run_id}']")
    assert "/_dashboard/#/run/" in page.url
    body = page.inner_text(".run")
    assert "succeeded" in body and "send_email" in body and "ann@example.com" in body
    assert f"step 1 of {run_id}" in page.inner_text("pre[data-stream=stdout]")
    assert page.is_disabled("button.retry") and page.is_disabled("button.cancel")
    assert page.errors == []


def test_every_page_draws_and_is_photographed(
    browser: Any,
    start: StartDaemon,  # noqa: F811
    shots: Path,
    fresh_db: Callable[[str], str],
) -> None:
    daemon = serving(start)
    daemon.event({"_id": "nightly", "trigger": {"schedule": {"every": 3600}},
                  "workers": {"mailer": {}}})  # fmt: skip
    orders = fresh_db("orders")
    daemon.event({"_id": "paid_order", "trigger": {"changes": {"db": orders}},
                  "workers": {"mailer": {}}})  # fmt: skip
    daemon.wait_loaded("nightly")
    daemon.wait_loaded("paid_order")
    runs = [fire(daemon, event) for event in ["send_email"] * 5 + ["bounce"] * 2]
    for run_id in runs:
        final_record(daemon, run_id)
    slow = fire(daemon, "slow_report")
    page = new_page(browser, daemon)
    open_dashboard(page, daemon.url + "_dashboard/")
    page.wait_for_selector(".card[data-series=fired]")
    overview = page.inner_text("#view")
    assert "Queue depth" in overview and "Run latency" in overview and "connected" in overview
    shot(page, shots, "overview")

    page.click("a.nav[data-page=workers]")
    card = page.wait_for_selector(".worker[data-worker=mailer]")
    page.wait_for_selector(f".worker[data-worker=mailer] a[href='#/run/{slow}']")
    text = card.inner_text()
    assert "busy" in text and "succeeded" in text and "MiB" in text
    shot(page, shots, "workers")

    page.click("a.nav[data-page=events]")
    page.wait_for_selector("tr[data-event=nightly]")
    assert "every 1 h" in page.inner_text("tr[data-event=nightly]")
    page.wait_for_selector("tr[data-event=paid_order] .badge")
    assert orders in page.inner_text("tr[data-event=paid_order]")
    assert "next" in page.inner_text("tr[data-event=nightly]")
    shot(page, shots, "events")

    page.click("a.nav[data-page=runs]")
    page.wait_for_selector(f"tr[data-id='{runs[0]}']")
    assert page.locator("table.runs tbody tr").count() == len(runs) + 1
    shot(page, shots, "runs")
    page.select_option("select[name=state]", "failed")
    page.wait_for_selector(f"table.runs tr[data-id='{runs[-1]}']")
    assert page.locator("table.runs tbody tr").count() == 2  # the two bounces
    assert re.search(r"state=failed", page.url)
    page.click(f"tr[data-id='{runs[-1]}']")
    page.wait_for_selector(f".run[data-id='{runs[-1]}']")
    shot(page, shots, "run")
    assert page.errors == []


def test_a_failed_run_shows_its_error_and_stderr(
    browser: Any,
    start: StartDaemon,  # noqa: F811
) -> None:
    daemon = serving(start)
    run_id = fire(daemon, "bounce")
    final_record(daemon, run_id)
    page = new_page(browser, daemon)
    open_dashboard(page, daemon.url + f"_dashboard/#/run/{run_id}")
    page.wait_for_selector(f".run[data-id='{run_id}'] .badge.s-failed")
    assert "550 mailbox unavailable" in page.inner_text(".run-error")
    stderr = page.inner_text("pre[data-stream=stderr]")
    assert f"working on {run_id}" in stderr and "smtp relay refused" in stderr
    assert page.is_enabled("button.retry") and page.is_disabled("button.cancel")


def test_retry_starts_a_new_attempt(browser: Any, start: StartDaemon) -> None:  # noqa: F811
    daemon = serving(start)
    run_id = fire(daemon, "bounce")
    final_record(daemon, run_id)
    page = new_page(browser, daemon)
    open_dashboard(page, daemon.url + f"_dashboard/#/run/{run_id}")
    page.wait_for_selector(f".run[data-id='{run_id}'] .badge.s-failed")
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/retry")) as sent:
        page.click("button.retry")
    assert sent.value.url == daemon.url + f"_activations/{run_id}/retry"
    page.wait_for_selector(".run:not([data-id='" + run_id + "'])")
    new = page.get_attribute(".run", "data-id")
    assert new and new != run_id
    page.wait_for_selector(f".run a[href='#/run/{run_id}']")  # retry of
    assert "attempt 2" in page.inner_text(".run-head")
    page.goto(daemon.url + f"_dashboard/#/run/{run_id}")
    page.wait_for_selector(f".run a[href='#/run/{new}']")  # retried as
    assert page.is_disabled("button.retry")


def test_cancel_stops_a_running_run(browser: Any, start: StartDaemon) -> None:  # noqa: F811
    daemon = serving(start)
    run_id = fire(daemon, "slow_report")
    page = new_page(browser, daemon)
    open_dashboard(page, daemon.url + f"_dashboard/#/run/{run_id}")
    page.wait_for_selector(f".run[data-id='{run_id}'] .badge.s-running")
    assert page.is_enabled("button.cancel") and page.is_disabled("button.retry")
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/cancel")) as sent:
        page.click("button.cancel")
    assert sent.value.url == daemon.url + f"_activations/{run_id}/cancel"
    page.wait_for_selector(f".run[data-id='{run_id}'] .badge.s-cancelled")
    assert page.is_disabled("button.cancel") and page.is_enabled("button.retry")


@pytest.mark.parametrize("how", ["queued", "scheduled"])
def test_cancel_a_queued_or_scheduled_run(
    browser: Any,
    start: StartDaemon,  # noqa: F811
    how: str,
) -> None:
    daemon = serving(start)
    if how == "queued":  # both processes busy for 30 s: the third run waits in the queue
        fire(daemon, "slow_report")
        fire(daemon, "slow_report")
        run_id, badge = fire(daemon, "slow_report"), "s-accepted"
    else:
        status, _h, body = daemon.fire("/send_email?delay=600", method="POST", body={})
        assert status == 202, body
        run_id, badge = body["runs"][0]["id"], "s-scheduled"
    page = new_page(browser, daemon)
    open_dashboard(page, daemon.url + f"_dashboard/#/run/{run_id}")
    page.wait_for_selector(f".run[data-id='{run_id}'] .badge.{badge}")
    assert page.is_enabled("button.cancel")
    page.click("button.cancel")
    page.wait_for_selector(f".run[data-id='{run_id}'] .badge.s-cancelled")
    doc = final_record(daemon, run_id)
    assert doc["state"] == "cancelled" and doc["started"] is None, doc


@pytest.mark.parametrize("proxy_kind", ["nginx", "haproxy"])
def test_under_events_behind_a_reverse_proxy(
    browser: Any,
    start: StartDaemon,  # noqa: F811
    couch: Any,
    request: pytest.FixtureRequest,
    proxy_kind: str,
) -> None:
    """The shipped nginx site and haproxy config (deploy/): every URL stays below /_events/."""
    daemon = serving(start)
    port = int(urllib.parse.urlsplit(daemon.url).port or 0)
    ports = {"events_port": port, "couchdb_port": couch.port, "couchdb_host": couch.host}
    proxy: NginxProxy | HaproxyProxy
    if proxy_kind == "nginx":
        proxy = NginxProxy(request.getfixturevalue("nginx_binary"), **ports)
    else:
        haproxy = find_haproxy()
        if haproxy is None:
            pytest.skip("haproxy is not installed (Debian: apt-get install haproxy)")
        proxy = HaproxyProxy(haproxy, **ports)
    with proxy:
        page = new_page(browser, daemon)
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        open_dashboard(page, proxy.url + "_events/_dashboard")
        assert page.url.startswith(proxy.url + "_events/_dashboard/")
        run_id = fire(daemon, "send_email")
        page.click("a.nav[data-page=runs]")
        page.wait_for_selector(f"tr[data-id='{run_id}'] .badge.s-succeeded")
        page.click(f"tr[data-id='{run_id}']")
        page.wait_for_selector(f".run[data-id='{run_id}']")
        assert requests and all(url.startswith(proxy.url + "_events/") for url in requests)
        assert proxy.url + "_events/_status" in requests
        assert page.errors == []


def test_overview_draws_the_recent_series_and_latency(
    browser: Any,
    start: StartDaemon,  # noqa: F811
) -> None:
    """The overview from ``recent`` as the status carries it (its shape is the contract; the
    numbers here are the test's own, put into the real status on its way to the page)."""
    import json

    daemon = serving(start)
    page = new_page(browser, daemon)
    fired = [i % 7 for i in range(300)]
    recent = {
        "interval": 1, "seconds": 300, "end": "2026-01-01T00:00:00Z",
        "series": {"fired": fired, "succeeded": fired, "failed": [0] * 300, "timeout": [0] * 300},
        "latency_ms": {"accept": {"p50": 1.5, "p99": 4.5, "count": 60},
                       "queue_wait": {"p50": None, "p99": None, "count": 0},
                       "run": {"p50": 120, "p99": 2400, "count": 60}},
    }  # fmt: skip

    def with_recent(route: Any) -> None:
        response = route.fetch()
        body = response.json()
        body["recent"] = recent
        route.fulfill(response=response, body=json.dumps(body))

    page.route("**/_status", with_recent)
    open_dashboard(page, daemon.url + "_dashboard/")
    page.wait_for_selector(".card[data-series=fired] svg.chart path.line")
    assert page.locator("svg.chart").count() == 4
    overview = page.inner_text("#view")
    for shown in ("1.5 ms", "/ 4.5 ms", "120 ms", "/ 2.40 s", "no runs"):  # p50 / p99
        assert shown in overview
    last_minute = sum(fired[-60:])
    assert f"{last_minute} in the last minute" in page.inner_text(".card[data-series=fired]")
    assert page.errors == []
