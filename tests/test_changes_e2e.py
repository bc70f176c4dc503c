"""End to end: events fired by a database's changes, against the tests' server. A selector
filters; a restart (clean, or the daemon killed) misses no change; triggers come, change and go
live; a missing database is an error in status until it exists; two daemons fire each change
once."""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.couch import OwnCouch, http_json
from tests.docs import RECORD_PY, delete_doc, put_doc, recorded
from tests.test_daemon_e2e import (
    Daemon,
    StartDaemon,
    start_daemon,  # noqa: F401 - the fixture, used by name
    stop_and_check,
    wait_for,
)

pytestmark = pytest.mark.e2e


def runs(*work_dirs: Path) -> list[dict[str, Any]]:
    return recorded(*work_dirs)


def changed_ids(*work_dirs: Path) -> list[str]:
    return [message["request"]["body"]["id"] for message in runs(*work_dirs)]


def setup_trigger(daemon: Daemon, db: str, event_id: str = "on_order", **trigger: Any) -> None:
    daemon.worker("record", {"w.py": RECORD_PY}, type="python", delegate="w.py", mode="reply")
    daemon.event(
        {
            "_id": event_id,
            "trigger": {"changes": {"db": db, **trigger}},
            "workers": {"record": {"order": ":id"}},
        }
    )


def follow(daemon: Daemon, db: str, **trigger: Any) -> None:
    """Put the event (and its worker) and wait until the daemon follows the database."""
    setup_trigger(daemon, db, **trigger)
    daemon.wait_loaded("on_order")
    wait_following(daemon)


def wait_following(daemon: Daemon, event_id: str = "on_order") -> dict[str, Any]:
    status = daemon.wait_status(
        lambda s: s["changes"].get(event_id, {}).get("state") == "following"
    )
    return dict(status["changes"][event_id])


def put_orders(daemon: Daemon, db: str, *orders: tuple[str, str]) -> None:
    for doc_id, state in orders:
        put_doc(daemon.couch_url, db, {"_id": doc_id, "status": state})


def test_a_selector_filters_and_the_message_holds_the_change(
    start_daemon: StartDaemon,  # noqa: F811
    fresh_db: Any,
) -> None:
    daemon = start_daemon()
    orders = fresh_db("orders")
    put_orders(daemon, orders, ("before", "paid"))  # made before the trigger: not fired
    follow(daemon, orders, selector={"status": "paid"}, include_docs=True)
    put_orders(daemon, orders, ("o1", "new"), ("o2", "paid"), ("o3", "new"), ("o4", "paid"))
    wait_for(lambda: len(runs(daemon.work_dir)) >= 2)
    time.sleep(0.5)  # nothing else comes
    found = runs(daemon.work_dir)
    assert [m["request"]["body"]["id"] for m in found] == ["o2", "o4"]
    message = found[0]
    assert message["event"] == "on_order" and message["arguments"] == {"order": "o2"}
    request = message["request"]
    assert (request["method"], request["path"], request["peer"]) == (
        "POST",
        "/on_order",
        "changes",
    )
    assert request["body"]["db"] == orders
    assert request["body"]["doc"]["status"] == "paid"
    assert request["body"]["changes"][0]["rev"].startswith("1-")
    status = daemon.wait_status(lambda s: s["changes"]["on_order"]["fired"] == 2)
    trigger = status["changes"]["on_order"]
    assert trigger["db"] == orders and trigger["filter"] == "_selector"
    assert trigger["state"] == "following" and trigger["last_error"] is None
    assert trigger["lag"] == 0 and trigger["checkpoint"] is not None
    assert status["events"]["on_order"]["changes"] == orders
    assert status["events"]["on_order"]["schedule"] is None
    stop_and_check(daemon)


def test_a_clean_restart_misses_no_change_and_fires_none_twice(
    start_daemon: StartDaemon,  # noqa: F811
    fresh_db: Any,
) -> None:
    one = start_daemon()
    orders = fresh_db("orders")
    follow(one, orders)
    put_orders(one, orders, ("a1", "new"), ("a2", "new"), ("a3", "new"))
    wait_for(lambda: len(runs(one.work_dir)) == 3)
    stop_and_check(one)
    put_orders(one, orders, *((f"b{n}", "new") for n in range(1, 6)))  # while none runs
    two = start_daemon(events_db=one.events_db, workers_db=one.workers_db)
    wait_for(lambda: len(runs(one.work_dir, two.work_dir)) >= 8)
    put_orders(two, orders, ("c1", "new"))
    wait_for(lambda: len(runs(one.work_dir, two.work_dir)) >= 9)
    time.sleep(0.5)
    ids = changed_ids(one.work_dir, two.work_dir)
    assert sorted(ids) == ["a1", "a2", "a3", "b1", "b2", "b3", "b4", "b5", "c1"]
    stop_and_check(two)


def test_a_killed_daemon_misses_no_change_when_started_again(
    start_daemon: StartDaemon,  # noqa: F811
    fresh_db: Any,
) -> None:
    one = start_daemon()
    orders = fresh_db("orders")
    follow(one, orders)
    put_orders(one, orders, ("a1", "new"), ("a2", "new"))
    wait_for(lambda: len(runs(one.work_dir)) == 2)
    one.host.kill()  # SIGKILL: no checkpoint or lease given back
    put_orders(one, orders, *((f"b{n}", "new") for n in range(1, 5)))
    # Its lease names a process of this host that is gone: taken over at once.
    again = start_daemon(events_db=one.events_db, workers_db=one.workers_db)
    dirs = (one.work_dir, again.work_dir)
    wait_for(lambda: {"b1", "b2", "b3", "b4"} <= set(changed_ids(*dirs)), timeout=10)
    assert {"a1", "a2"} <= set(changed_ids(*dirs))
    stop_and_check(again)


def test_triggers_come_change_and_go_live(
    start_daemon: StartDaemon,  # noqa: F811
    fresh_db: Any,
) -> None:
    daemon = start_daemon()
    orders = fresh_db("orders")
    follow(daemon, orders, selector={"status": "paid"})
    put_orders(daemon, orders, ("p1", "paid"), ("n1", "new"), ("p3", "paid"))
    wait_for(lambda: changed_ids(daemon.work_dir) == ["p1", "p3"])
    # A new selector takes over from the checkpoint (after p3).
    url = f"{daemon.couch_url}{daemon.events_db}/on_order"
    _status, current = http_json("GET", url)
    current["trigger"]["changes"]["selector"] = {"status": "new"}
    daemon.event(current)
    daemon.host.wait_for_log("changes trigger of event on_order stopped")
    put_orders(daemon, orders, ("p2", "paid"), ("n2", "new"))
    wait_for(lambda: changed_ids(daemon.work_dir) == ["p1", "p3", "n2"])
    # Deleted: it stops, and later changes fire nothing.
    delete_doc(daemon.couch_url, daemon.events_db, "on_order")
    daemon.wait_status(lambda s: "on_order" not in s["changes"])
    put_orders(daemon, orders, ("n3", "new"))
    time.sleep(1.0)
    assert changed_ids(daemon.work_dir) == ["p1", "p3", "n2"]
    stop_and_check(daemon)


def test_a_missing_database_is_an_error_until_it_exists(
    start_daemon: StartDaemon,  # noqa: F811
    fresh_db: Any,
) -> None:
    daemon = start_daemon()
    name = fresh_db("later")
    db_url = daemon.couch_url + urllib.parse.quote(name, safe="")
    assert http_json("DELETE", db_url)[0] == 200
    setup_trigger(daemon, name)
    daemon.wait_loaded("on_order")
    status = daemon.wait_status(lambda s: s["changes"]["on_order"].get("state") == "waiting")
    trigger = status["changes"]["on_order"]
    assert trigger["last_error"].startswith(f"database {name!r} does not exist")
    assert trigger["connected"] is False
    assert http_json("PUT", db_url)[0] == 201
    put_orders(daemon, name, ("first", "new"))  # made before the daemon looks again: fired
    wait_for(lambda: changed_ids(daemon.work_dir) == ["first"], timeout=15)
    status = daemon.wait_status(lambda s: s["changes"]["on_order"]["last_error"] is None)
    assert status["changes"]["on_order"]["state"] == "following"
    stop_and_check(daemon)


def test_two_daemons_fire_each_change_once(
    start_daemon: StartDaemon,  # noqa: F811
    fresh_db: Any,
) -> None:
    one = start_daemon()
    two = start_daemon(events_db=one.events_db, workers_db=one.workers_db)
    orders = fresh_db("orders")
    setup_trigger(one, orders)
    one.wait_loaded("on_order")
    two.wait_loaded("on_order")

    def states() -> list[str]:
        return sorted(d.status()["changes"]["on_order"].get("state", "") for d in (one, two))

    wait_for(lambda: states() == ["following", "standby"])
    put_orders(one, orders, *((f"o{n}", "new") for n in range(10)))
    wait_for(lambda: len(runs(one.work_dir, two.work_dir)) >= 10)
    time.sleep(0.5)
    ids = changed_ids(one.work_dir, two.work_dir)
    assert sorted(ids) == sorted(f"o{n}" for n in range(10))
    # The follower stops cleanly: the other takes over at once and goes on from its checkpoint.
    leader, other = (
        (one, two) if one.status()["changes"]["on_order"]["state"] == "following" else (two, one)
    )
    stop_and_check(leader)
    wait_for(lambda: other.status()["changes"]["on_order"]["state"] == "following", timeout=10)
    put_orders(other, orders, ("after", "new"))
    wait_for(lambda: "after" in changed_ids(one.work_dir, two.work_dir))
    time.sleep(0.5)
    assert len(changed_ids(one.work_dir, two.work_dir)) == 11
    stop_and_check(other)


def test_couchdb_going_away_and_coming_back(
    start_daemon: StartDaemon,  # noqa: F811
    own_couch: Callable[..., OwnCouch],
) -> None:
    couch = own_couch("ev", "wk", "orders")
    url = couch.url
    daemon = start_daemon(couchdb_url=url, events_db="ev", workers_db="wk")
    follow(daemon, "orders")
    put_orders(daemon, "orders", ("before", "new"))
    wait_for(lambda: changed_ids(daemon.work_dir) == ["before"])

    couch.stop()
    gone = daemon.wait_status(lambda s: s["changes"]["on_order"]["state"] == "waiting", timeout=40)
    assert gone["changes"]["on_order"]["connected"] is False
    assert gone["changes"]["on_order"]["last_error"]

    couch.start_again()
    daemon.wait_status(lambda s: s["changes"]["on_order"]["connected"], timeout=40)
    put_orders(daemon, "orders", ("after", "new"))
    wait_for(lambda: changed_ids(daemon.work_dir) == ["before", "after"], timeout=15)
    assert "reading orders again" in daemon.host.log_text()
    stop_and_check(daemon)


def test_a_design_document_filter_with_query_params(
    start_daemon: StartDaemon,  # noqa: F811
    fresh_db: Any,
) -> None:
    daemon = start_daemon()
    orders = fresh_db("orders")
    put_doc(
        daemon.couch_url,
        orders,
        {
            "_id": "_design/shop",
            "filters": {"big": "function (doc, req) { return doc.total >= +req.query.min; }"},
        },
    )
    follow(daemon, orders, filter="shop/big", query_params={"min": "100"})
    for doc_id, total in (("small", 5), ("large", 250), ("exact", 100)):
        put_doc(daemon.couch_url, orders, {"_id": doc_id, "total": total})
    wait_for(lambda: len(runs(daemon.work_dir)) >= 2)
    time.sleep(0.5)
    assert changed_ids(daemon.work_dir) == ["large", "exact"]
    assert daemon.status()["changes"]["on_order"]["filter"] == "shop/big"
    stop_and_check(daemon)
