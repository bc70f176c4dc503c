"""Changes triggers as event documents give them: the object and list forms, and every mistake
with its message."""

from __future__ import annotations

from typing import Any

import pytest

from couchdb_events.model.events import parse_event
from couchdb_events.model.sources import ChangesTrigger, parse_changes


def event(trigger: Any) -> Any:
    return parse_event({"_id": "e", "_rev": "1-a", "trigger": trigger, "workers": {"w": {}}})


def test_the_object_and_list_forms_give_the_same_trigger() -> None:
    changes = {"db": "orders", "selector": {"status": "paid"}, "include_docs": True}
    one = event({"changes": changes, "/orders": {"method": "POST"}})
    two = event([{"changes": changes}, {"path": "/orders", "method": "POST"}])
    assert one.error is None and two.error is None
    assert (
        one.changes
        == two.changes
        == ChangesTrigger("orders", selector={"status": "paid"}, include_docs=True)
    )
    assert [t.path for t in one.triggers] == ["/orders"]


def test_defaults_and_a_filter_function() -> None:
    assert parse_changes({"db": "orders"}) == ChangesTrigger("orders")
    trigger = parse_changes(
        {"db": "a/b_c$(1)+-", "filter": "shop/paid", "query_params": {"min": "5"}, "since": 0}
    )
    assert trigger.filter == "shop/paid" and trigger.query_params == {"min": "5"}
    assert trigger.since == 0 and trigger.include_docs is False


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("orders", 'changes must be an object like {"db": "orders", "selector": {...}}'),
        (
            {"db": "orders", "selectr": {}},
            "changes: unknown fields ['selectr'] "
            "(known: db, selector, filter, query_params, include_docs, since)",
        ),
        (
            {},
            'changes: "db" must be a database name (lower case letters, digits and _$()+-/, '
            "starting with a letter), not None",
        ),
        (
            {"db": "Orders"},
            'changes: "db" must be a database name (lower case letters, digits '
            "and _$()+-/, starting with a letter), not 'Orders'",
        ),
        (
            {"db": "o", "selector": {}, "filter": "a/b"},
            'changes: give a "selector" or a "filter", not both',
        ),
        (
            {"db": "o", "selector": ["status"]},
            'changes: "selector" must be a Mango selector, like {"type": "order"}',
        ),
        (
            {"db": "o", "filter": "paid"},
            'changes: "filter" must name a design document\'s filter as "ddoc/name", not \'paid\'',
        ),
        (
            {"db": "o", "filter": "a/b", "query_params": {"n": 1}},
            'changes: "query_params" must be an object of strings',
        ),
        (
            {"db": "o", "query_params": {"n": "1"}},
            'changes: "query_params" are for a "filter" function',
        ),
        (
            {"db": "o", "include_docs": "yes"},
            "changes: \"include_docs\" must be true or false, not 'yes'",
        ),
        ({"db": "o", "since": 5}, 'changes: "since" must be "now" or 0, not 5'),
        ({"db": "o", "since": False}, 'changes: "since" must be "now" or 0, not False'),
    ],
)
def test_mistakes_are_named(value: Any, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_changes(value)
    assert str(caught.value) == message
    assert event({"changes": value}).error == f"event 'e': {message}"


def test_one_changes_trigger_per_event_and_an_entry_of_its_own() -> None:
    two = event([{"changes": {"db": "a"}}, {"changes": {"db": "b"}}])
    assert two.error == "event 'e': an event has at most one changes trigger"
    mixed = event([{"changes": {"db": "a"}, "method": "GET"}])
    assert mixed.error == "event 'e': trigger 1: a \"changes\" trigger is an entry of its own"
