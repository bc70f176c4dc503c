"""End to end: the real service (serve mode) against the tests' CouchDB, with an admin and
users (``test_access_e2e``'s server): runs fired, ``/_events/_metrics`` scraped and parsed with
prometheus_client's own parser, who may scrape it, and the status document's ``recent``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.couch import CouchServer
from tests.daemon_host import http
from tests.docs import put_doc, put_worker
from tests.test_access_e2e import (  # noqa: F401
    Secured,
    StartServe,
    basic,
    secured,
    serve,
)

pytestmark = pytest.mark.e2e

JUDGE_PY = """
import couchdb_events_worker as w

def judge(message):
    if message["request"]["query"].get("fail"):
        raise ValueError("told to fail")
    return {"ok": True}

w.run(judge, mode="reply")
"""


@pytest.fixture(scope="module")
def judged(secured: Secured, couch: CouchServer) -> Iterator[Secured]:  # noqa: F811
    """``secured`` with a worker that fails when asked (``?fail=1``) and its open event."""
    authed = secured.server.url
    put_worker(
        authed, secured.workers, "judge", {"j.py": JUDGE_PY},
        type="python", delegate="j.py", mode="reply",
    )  # fmt: skip
    put_doc(authed, secured.events, {"_id": "judged", "workers": {"judge": {}}})
    yield secured


def families(text: str) -> dict[str, list[Sample]]:
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def one(found: dict[str, list[Sample]], family: str, name: str, **labels: str) -> float:
    matching = [s.value for s in found[family] if s.name == name and s.labels == labels]
    assert len(matching) == 1, (name, labels, found.get(family))
    return matching[0]


def test_runs_are_counted_by_event_worker_and_state(
    serve: StartServe,  # noqa: F811
    judged: Secured,
) -> None:
    url = serve()
    admin = basic(*judged.admin)
    status, _h, body = http("GET", url + "judged?wait=10")
    assert status == 200 and body["runs"][0]["state"] == "succeeded", body
    status, _h, body = http("GET", url + "judged?wait=10&fail=1")
    assert status == 200 and body["runs"][0]["state"] == "failed", body

    status, headers, text = http("GET", url + "_metrics", headers=admin)
    assert status == 200, text
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    found = families(text)
    runs = "couchdb_events_runs"
    judge = {"event": "judged", "worker": "judge"}
    assert one(found, runs, runs + "_total", **judge, state="succeeded") == 1
    assert one(found, runs, runs + "_total", **judge, state="failed") == 1
    duration = "couchdb_events_run_duration_seconds"
    assert one(found, duration, duration + "_count", worker="judge") == 2
    assert one(found, duration, duration + "_bucket", worker="judge", le="+Inf") == 2
    wait = "couchdb_events_queue_wait_seconds"
    assert one(found, wait, wait + "_count", worker="judge") == 2
    accept = "couchdb_events_accept_latency_seconds"
    assert one(found, accept, accept + "_count") == 2
    writes = "couchdb_events_activation_writes"
    assert one(found, writes, writes + "_total") >= 1  # durable: records were written
    batch = "couchdb_events_activation_batch_size"
    assert one(found, batch, batch + "_sum") >= 2  # two accepted records at least
    procs = "couchdb_events_processes"
    assert sum(s.value for s in found[procs] if s.labels["worker"] == "judge") >= 1
    depth = "couchdb_events_queue_depth"
    assert one(found, depth, depth, worker="judge") == 0
    connected = "couchdb_events_couchdb_connected"
    assert one(found, connected, connected) == 1
    assert one(found, "couchdb_events_uptime_seconds", "couchdb_events_uptime_seconds") > 0
    info = [s.labels for s in found["couchdb_events_info"]]
    assert len(info) == 1 and info[0]["host"] == "standalone" and info[0]["version"]
    for samples in found.values():
        for sample in samples:
            assert not {body["runs"][0]["id"]} & set(sample.labels.values())

    status, _h, document = http("GET", url + "_status", headers=admin)
    assert status == 200
    recent = document["recent"]
    assert (recent["interval"], recent["seconds"]) == (1, 300)
    assert recent["end"].endswith("Z")
    assert set(recent["series"]) == {"fired", "succeeded", "failed", "timeout"}
    assert all(len(values) == 300 for values in recent["series"].values())
    assert sum(recent["series"]["fired"]) == 2
    assert sum(recent["series"]["succeeded"]) == 1
    assert sum(recent["series"]["failed"]) == 1
    latency = recent["latency_ms"]
    assert set(latency) == {"accept", "queue_wait", "run"}
    assert latency["run"]["count"] == 2 and latency["run"]["p50"] is not None
    assert latency["accept"]["count"] == 2


def test_metrics_follow_status_access_by_default(
    serve: StartServe,  # noqa: F811
    judged: Secured,
) -> None:
    url = serve()
    assert http("GET", url + "_metrics")[0] == 401
    assert http("GET", url + "_metrics", headers=basic(*judged.bob))[0] == 403
    assert http("GET", url + "_metrics", headers=basic(*judged.admin))[0] == 200
    assert http("POST", url + "_metrics", headers=basic(*judged.admin))[0] == 405


def test_metrics_access_public_opens_metrics_only(
    serve: StartServe,  # noqa: F811
    judged: Secured,
) -> None:
    url = serve(metrics_access="public")
    status, _h, text = http("GET", url + "_metrics")
    assert status == 200
    assert "couchdb_events_runs" in families(text)
    assert http("GET", url + "_status")[0] == 401
