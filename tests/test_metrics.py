"""``/_metrics`` without a server: the collector's families parsed back with prometheus_client's
own parser, who may scrape (``metrics_access``), and answers of bytes through each host."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from couchdb_events.api.access import Access, User, metrics_access
from couchdb_events.api.answer import Answer, raw_answer
from couchdb_events.api.metrics import CONTENT_TYPE
from couchdb_events.api.router import Router
from couchdb_events.config import Config
from couchdb_events.errors import ConfigError, HTTPError
from couchdb_events.hosts.external import answer_line
from couchdb_events.hosts.external_codec import encode_response, to_response
from couchdb_events.hosts.http import Api
from couchdb_events.model.message import Message
from couchdb_events.model.request import Request
from couchdb_events.runs.telemetry import Telemetry

ADMIN: User = {"name": "boss", "roles": ["_admin"]}
BOB: User = {"name": "bob", "roles": []}
ANON: User = {"name": None, "roles": []}

STATUS: dict[str, Any] = {
    "couchdb_events": {
        "version": "9.9", "host": "serve", "uptime": 12.5, "couchdb_connected": True,
    },
    "workers": {
        "mailer": {
            "queued": 3, "restarts": 2, "timeouts": 1,
            "processes": [
                {"pid": 1, "state": "busy", "rss": 1000},
                {"pid": 2, "state": "idle", "rss": 24},
            ],
        },
    },
    "activations": {"durable": True, "writes": 7, "backlog": 0},
    "changes": {"on_orders": {"lag": 42}, "elsewhere": {"lag": None}},
    "schedules": {
        "nightly": {"next_fire": None},  # an hour from the scrape (``status``)
        "never": {"next_fire": None},
    },
}  # fmt: skip


def status_now() -> dict[str, Any]:
    """``STATUS`` with the nightly schedule an hour from now (the time of the scrape)."""
    hour = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    return {**STATUS, "schedules": {**STATUS["schedules"], "nightly": {"next_fire": hour}}}


def telemetry() -> Telemetry:
    telemetry = Telemetry()
    for number, state in enumerate(("succeeded", "succeeded", "failed")):
        message = Message(f"r{number}", "send", "mailer", {}, {})
        telemetry.fired(1, telemetry.clock())
        telemetry.started(message)
        telemetry.final(message, state)
    telemetry.wrote(2)
    return telemetry


def router(config: Config, tele: Telemetry | None = None) -> Router:
    runner: Any = SimpleNamespace(telemetry=tele or telemetry(), activations=None)
    status: Any = SimpleNamespace(status=status_now)
    return Router(None, runner, status, config, Access(config))  # type: ignore[arg-type]


def scrape(config: Config, user: User | None = ADMIN, method: str = "GET") -> Answer:
    async def go() -> Answer:
        return await router(config).handle(Request(method, "/_metrics", user=user))

    return asyncio.run(go())


def samples(text: str) -> dict[str, list[Sample]]:
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def value(found: dict[str, list[Sample]], family: str, name: str, **labels: str) -> float:
    matching = [s.value for s in found[family] if s.name == name and s.labels == labels]
    assert len(matching) == 1, (name, labels, found[family])
    return matching[0]


def test_the_families_and_their_labels() -> None:
    answer = scrape(Config())
    assert answer.status == 200
    assert answer.headers["Content-Type"] == CONTENT_TYPE
    assert answer.raw is not None
    found = samples(answer.raw.decode())
    runs = "couchdb_events_runs"
    assert (
        value(found, runs, runs + "_total", event="send", worker="mailer", state="succeeded") == 2
    )
    assert value(found, runs, runs + "_total", event="send", worker="mailer", state="failed") == 1
    duration = "couchdb_events_run_duration_seconds"
    assert value(found, duration, duration + "_count", worker="mailer") == 3
    assert value(found, duration, duration + "_bucket", worker="mailer", le="+Inf") == 3
    wait = "couchdb_events_queue_wait_seconds"
    assert value(found, wait, wait + "_count", worker="mailer") == 3
    accept = "couchdb_events_accept_latency_seconds"
    assert value(found, accept, accept + "_count") == 3
    batch = "couchdb_events_activation_batch_size"
    assert value(found, batch, batch + "_bucket", le="1.0") == 0
    assert value(found, batch, batch + "_bucket", le="2.0") == 1
    assert value(found, batch, batch + "_sum") == 2
    assert (
        value(found, "couchdb_events_queue_depth", "couchdb_events_queue_depth", worker="mailer")
        == 3
    )
    procs = "couchdb_events_processes"
    assert value(found, procs, procs, worker="mailer", state="busy") == 1
    assert value(found, procs, procs, worker="mailer", state="idle") == 1
    assert value(found, procs, procs, worker="mailer", state="starting") == 0
    rss = "couchdb_events_worker_rss_bytes"
    assert value(found, rss, rss, worker="mailer") == 1024
    restarts = "couchdb_events_worker_restarts"
    assert value(found, restarts, restarts + "_total", worker="mailer") == 2
    timeouts = "couchdb_events_worker_timeouts"
    assert value(found, timeouts, timeouts + "_total", worker="mailer") == 1
    lag = "couchdb_events_changes_lag"
    assert [(s.labels, s.value) for s in found[lag]] == [({"trigger": "on_orders"}, 42)]
    fire = "couchdb_events_schedule_next_fire_seconds"
    assert [s.labels for s in found[fire]] == [{"event": "nightly"}]
    assert 3500 < found[fire][0].value <= 3600
    writes = "couchdb_events_activation_writes"
    assert value(found, writes, writes + "_total") == 7
    assert value(found, "couchdb_events_couchdb_connected", "couchdb_events_couchdb_connected") == 1
    assert value(found, "couchdb_events_uptime_seconds", "couchdb_events_uptime_seconds") == 12.5
    info = "couchdb_events_info"
    assert value(found, info, info, version="9.9", host="serve") == 1


def test_every_name_is_prefixed_and_no_label_holds_a_run_id() -> None:
    answer = scrape(Config())
    assert answer.raw is not None
    for family in text_string_to_metric_families(answer.raw.decode()):
        assert family.name.startswith("couchdb_events_")
        for sample in family.samples:
            assert not {"r0", "r1", "r2"} & set(sample.labels.values())


@pytest.mark.parametrize(
    ("settings", "anonymous", "bob", "boss"),
    [
        ({}, 401, 403, 200),
        ({"status_access": "user"}, 401, 200, 200),
        ({"status_access": "public"}, 200, 200, 200),
        ({"metrics_access": "public"}, 200, 200, 200),
        ({"metrics_access": "admin", "status_access": "public"}, 401, 403, 200),
        ({"metrics_access": "user"}, 401, 200, 200),
    ],
)
def test_who_may_scrape(settings: dict[str, str], anonymous: int, bob: int, boss: int) -> None:
    config = Config.from_settings(settings)
    for user, expected in ((ANON, anonymous), (BOB, bob), (ADMIN, boss)):
        try:
            got = scrape(config, user).status
        except HTTPError as exc:
            got = exc.status
        assert got == expected, (settings, user)


def test_metrics_access_setting() -> None:
    assert Config().metrics_access == "status"
    assert metrics_access(Config(status_access="user")) == "user"
    assert metrics_access(Config.from_settings({"metrics_access": " Public "})) == "public"
    with pytest.raises(ConfigError, match="one of status, admin, user, public"):
        Config.from_settings({"metrics_access": "everyone"})
    with pytest.raises(ConfigError, match="one of admin, user, public"):
        Config.from_settings({"status_access": "status"})


def test_only_get_and_head() -> None:
    with pytest.raises(HTTPError) as refused:
        scrape(Config(), method="POST")
    assert refused.value.status == 405
    assert scrape(Config(), method="HEAD").status == 200


def test_the_recent_section_is_the_telemetrys() -> None:
    recent = telemetry().recent()
    assert set(recent) == {"interval", "seconds", "end", "series", "latency_ms"}
    assert recent["series"]["fired"][-1] == 3
    assert recent["latency_ms"]["run"]["count"] == 3


# -- answers of bytes, through each host -------------------------------------------------------

TEXT = raw_answer(200, "# é\nx 1\n".encode(), "text/plain; charset=utf-8", {"X-A": "b"})
BINARY = raw_answer(200, b"\x89PNG\xff\x00", "image/png")


class Fixed:
    def __init__(self, answer: Answer) -> None:
        self.answer = answer

    async def handle(self, request: Request, max_wait: float = 0) -> Answer:
        return self.answer


def test_the_http_host_sends_bytes_as_they_are() -> None:
    async def get(answer: Answer, method: str = "GET") -> tuple[int, str, str, bytes]:
        server = TestServer(Api(Fixed(answer), 1024).app)  # type: ignore[arg-type]
        await server.start_server()
        try:
            url = server.make_url("/_events/x")
            async with ClientSession() as client, client.request(method, url) as got:
                body = await got.read()
                return got.status, got.headers["Content-Type"], got.headers.get("X-A", ""), body
        finally:
            await server.close()

    assert asyncio.run(get(TEXT)) == (200, "text/plain; charset=utf-8", "b", "# é\nx 1\n".encode())
    assert asyncio.run(get(BINARY))[1:] == ("image/png", "", b"\x89PNG\xff\x00")
    assert asyncio.run(get(TEXT, "HEAD"))[3] == b""
    json_answer = asyncio.run(get(Answer(202, {"ok": True})))
    assert json_answer[:2] == (202, "application/json")
    assert json.loads(json_answer[3]) == {"ok": True}


def test_the_external_host_sends_text_as_body_and_other_bytes_as_base64() -> None:
    text = to_response(TEXT)
    assert text == {
        "code": 200,
        "headers": {"Content-Type": "text/plain; charset=utf-8", "X-A": "b"},
        "body": "# é\nx 1\n",
    }
    assert json.loads(encode_response(text)) == text  # one ASCII line
    binary = to_response(BINARY)
    assert binary["headers"] == {"Content-Type": "image/png"}
    assert base64.b64decode(binary["base64"]) == b"\x89PNG\xff\x00"
    assert "body" not in binary and "json" not in binary
    assert to_response(Answer(200, {"a": 1})) == {
        "code": 200, "headers": {"Content-Type": "application/json"}, "json": {"a": 1},
    }  # fmt: skip


def test_the_external_host_answers_a_scrape() -> None:
    line = json.dumps({
        "method": "GET", "path": ["db", "_events", "_metrics"],
        "headers": {}, "body": "undefined", "userCtx": {"name": "boss", "roles": ["_admin"]},
    }).encode()  # fmt: skip

    async def go() -> dict[str, Any]:
        return await answer_line(router(Config()), line)

    response = asyncio.run(go())
    assert response["code"] == 200
    assert response["headers"]["Content-Type"] == CONTENT_TYPE
    names = {f.name for f in text_string_to_metric_families(response["body"])}
    assert "couchdb_events_runs" in names
