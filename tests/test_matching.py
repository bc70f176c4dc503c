"""Which events a request fires (404, 405, 500 otherwise), and the arguments a worker gets."""

from __future__ import annotations

from typing import Any

import pytest

from couchdb_events.errors import HTTPError
from couchdb_events.model.events import EventSpec, Trigger, parse_event
from couchdb_events.model.matching import (
    ID_METHODS,
    Match,
    build_arguments,
    find_events,
    find_matches,
    match_event,
    request_parameters,
)


def spec(
    event_id: str,
    *triggers: tuple[str, set[str] | None],
    disabled: bool = False,
    error: str | None = None,
) -> EventSpec:
    return EventSpec(
        id=event_id,
        rev="1-a",
        triggers=tuple(Trigger(p, frozenset(m) if m is not None else None) for p, m in triggers),
        workers=(("w", {}),),
        disabled=disabled,
        error=error,
    )


def table(*specs: EventSpec) -> dict[str, EventSpec]:
    return {s.id: s for s in specs}


def ids(events: list[EventSpec]) -> list[str]:
    return [e.id for e in events]


def http_error(events: dict[str, EventSpec], method: str, path: str) -> HTTPError:
    with pytest.raises(HTTPError) as info:
        find_events(events, method, path)
    return info.value


SEED = parse_event(
    {
        "_id": "email_event",
        "trigger": {"/send_email": {"method": "GET"}},
        "workers": {"send_email": {"recipient": "support@yourcompany.com"}},
    }
)


# -- by id -------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST", "get", "post"])
def test_fire_by_id(method: str) -> None:
    assert find_events(table(SEED), method, "/email_event") == [SEED]


def test_fire_by_id_without_leading_slash() -> None:
    assert find_events(table(SEED), "GET", "email_event") == [SEED]


def test_fire_by_id_with_several_leading_slashes() -> None:
    assert find_events(table(SEED), "GET", "///email_event") == [SEED]


def test_id_takes_the_methods_its_triggers_name() -> None:
    events = table(spec("e", ("/x", {"PUT"}), ("/y", {"DELETE"})))
    assert ids(find_events(events, "PUT", "/e")) == ["e"]
    assert ids(find_events(events, "DELETE", "/e")) == ["e"]


def test_id_refuses_other_methods_with_405() -> None:
    error = http_error(table(spec("e", ("/x", {"PUT"}))), "PATCH", "/e")
    assert error.status == 405
    assert error.error == "method_not_allowed"
    assert error.headers == {"Allow": "GET, POST, PUT"}
    assert error.reason == "/e does not take PATCH; it takes GET, POST, PUT"


def test_id_with_a_trigger_taking_any_method_still_takes_only_named_methods() -> None:
    # A trigger without ``method`` names no method, so the id takes only GET and POST.
    events = table(spec("e", ("/x", None)))
    assert http_error(events, "PUT", "/e").headers == {"Allow": "GET, POST"}
    assert ids(find_events(events, "PUT", "/x")) == ["e"]


def test_id_methods_are_get_and_post() -> None:
    assert frozenset({"GET", "POST"}) == ID_METHODS


def test_event_ids_may_contain_slashes() -> None:
    assert ids(find_events(table(spec("a/b")), "GET", "/a/b")) == ["a/b"]


# -- by trigger path ---------------------------------------------------------------------------


def test_fire_by_trigger_path() -> None:
    assert find_events(table(SEED), "GET", "/send_email") == [SEED]


def test_method_is_case_insensitive() -> None:
    assert find_events(table(SEED), "get", "/send_email") == [SEED]


def test_trigger_without_method_takes_any() -> None:
    events = table(spec("e", ("/hook", None)))
    for method in ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        assert ids(find_events(events, method, "/hook")) == ["e"]


def test_trigger_path_refuses_other_methods_with_405() -> None:
    error = http_error(table(SEED), "POST", "/send_email")
    assert error.status == 405
    assert error.headers == {"Allow": "GET"}
    assert "/send_email does not take POST" in error.reason


def test_405_allow_is_the_union_over_events() -> None:
    events = table(
        spec("a", ("/hook", {"GET"})),
        spec("b", ("/hook", {"PUT", "POST"})),
        spec("c", ("/other", {"DELETE"})),
    )
    error = http_error(events, "DELETE", "/hook")
    assert error.status == 405
    assert error.headers == {"Allow": "GET, POST, PUT"}


def test_405_allow_unites_id_and_trigger_methods() -> None:
    # "/b" is the id of one event and a trigger path of another.
    events = table(spec("b", ("/x", {"PUT"})), spec("a", ("/b", {"DELETE", "PATCH"})))
    error = http_error(events, "OPTIONS", "/b")
    assert error.headers == {"Allow": "DELETE, GET, PATCH, POST, PUT"}


def test_several_events_on_one_path_fire_in_id_order() -> None:
    events = table(
        spec("zeta", ("/hook", None)),
        spec("alpha", ("/hook", {"POST"})),
        spec("mid", ("/hook", {"GET"})),
    )
    assert ids(find_events(events, "POST", "/hook")) == ["alpha", "zeta"]
    assert ids(find_events(events, "GET", "/hook")) == ["mid", "zeta"]


def test_one_event_with_two_triggers_on_one_path_fires_once() -> None:
    events = table(spec("e", ("/hook", {"GET"}), ("/hook", None)))
    assert ids(find_events(events, "GET", "/hook")) == ["e"]


def test_id_and_trigger_at_once_deduplicated_id_first() -> None:
    # "/b" is event b's id and also a trigger path of events a and b.
    events = table(spec("a", ("/b", None)), spec("b", ("/b", None)))
    assert ids(find_events(events, "POST", "/b")) == ["b", "a"]


def test_id_match_and_trigger_405_still_fires_the_id() -> None:
    events = table(spec("hook"), spec("a", ("/hook", {"PUT"})))
    assert ids(find_events(events, "GET", "/hook")) == ["hook"]


def test_trigger_match_and_id_405_still_fires_the_trigger() -> None:
    events = table(spec("hook"), spec("a", ("/hook", {"PUT"})))
    assert ids(find_events(events, "PUT", "/hook")) == ["a"]


# -- not found, disabled, invalid --------------------------------------------------------------


@pytest.mark.parametrize("path", ["/nothing", "/", "", "/send_email/x"])
def test_404_with_reason(path: str) -> None:
    error = http_error(table(SEED), "GET", path)
    assert error.status == 404
    assert error.error == "not_found"
    expected = "/" + path.lstrip("/")
    assert error.reason == f"no event has the id or trigger path {expected}"


def test_404_with_no_events() -> None:
    assert http_error({}, "GET", "/x").status == 404


def test_trailing_slash_is_kept() -> None:
    # Only leading slashes are normalised: "/email_event/" is neither the id nor the trigger.
    assert http_error(table(SEED), "GET", "/email_event/").status == 404
    assert http_error(table(SEED), "GET", "/send_email/").status == 404


def test_trigger_with_trailing_slash_needs_it_in_the_request() -> None:
    events = table(parse_event({"_id": "e", "trigger": {"hook/": None}, "workers": {"w": {}}}))
    assert ids(find_events(events, "GET", "/hook/")) == ["e"]
    assert http_error(events, "GET", "/hook").status == 404


def test_trigger_written_without_leading_slash_matches() -> None:
    events = table(parse_event({"_id": "e", "trigger": {"hook": None}, "workers": {"w": {}}}))
    assert ids(find_events(events, "GET", "/hook")) == ["e"]
    assert ids(find_events(events, "GET", "hook")) == ["e"]


def test_disabled_event_is_ignored_by_id_and_by_path() -> None:
    events = table(spec("e", ("/hook", None), disabled=True))
    assert http_error(events, "GET", "/e").status == 404
    assert http_error(events, "GET", "/hook").status == 404


def test_disabled_event_does_not_hide_others_on_its_path() -> None:
    events = table(spec("a", ("/hook", None), disabled=True), spec("b", ("/hook", {"GET"})))
    assert ids(find_events(events, "GET", "/hook")) == ["b"]
    assert http_error(events, "POST", "/hook").headers == {"Allow": "GET"}


def test_disabled_event_by_id_does_not_count_for_405() -> None:
    events = table(spec("hook", disabled=True), spec("a", ("/hook", {"PUT"})))
    assert http_error(events, "GET", "/hook").headers == {"Allow": "PUT"}


def test_invalid_event_by_id_is_500() -> None:
    events = table(spec("e", error="event 'e': no workers"))
    error = http_error(events, "GET", "/e")
    assert error.status == 500
    assert error.error == "event_invalid"
    assert error.reason == "event 'e': no workers"


def test_invalid_event_by_id_is_500_whatever_the_method() -> None:
    events = table(spec("e", error="broken"))
    assert http_error(events, "DELETE", "/e").status == 500


def test_invalid_event_from_a_real_document_by_id_is_500() -> None:
    bad = parse_event({"_id": "e", "trigger": {"/hook": None}})
    assert bad.error is not None
    assert http_error(table(bad), "POST", "/e").status == 500


def test_invalid_event_is_skipped_for_path_matches() -> None:
    events = table(spec("a", ("/hook", None), error="broken"), spec("b", ("/hook", {"GET"})))
    assert ids(find_events(events, "GET", "/hook")) == ["b"]
    assert (
        http_error(table(spec("a", ("/hook", None), error="broken")), "GET", "/hook").status == 404
    )


def test_disabled_invalid_event_by_id_is_ignored() -> None:
    events = table(spec("e", disabled=True, error="broken"))
    assert http_error(events, "GET", "/e").status == 404


# -- arguments ---------------------------------------------------------------------------------


def test_arguments_overlay_worker_then_event() -> None:
    merged = build_arguments(
        {"to": "worker@x", "subject": "hi", "nested": {"a": 1, "b": 2}},
        {"to": "event@x", "nested": {"a": 3}},
        {},
        "event 'e' (worker 'w')",
    )
    # The overlay is shallow: the event's "nested" replaces the worker's.
    assert merged == {"to": "event@x", "subject": "hi", "nested": {"a": 3}}


def test_arguments_do_not_change_their_inputs() -> None:
    worker = {"to": ":to", "list": [":to"]}
    event = {"x": {"y": ":to"}}
    build_arguments(worker, event, {"to": "a@b"}, "e")
    assert worker == {"to": ":to", "list": [":to"]}
    assert event == {"x": {"y": ":to"}}


def test_parameter_substitution() -> None:
    merged = build_arguments({"to": ":email", "n": ":count"}, {}, {"email": "a@b", "count": 3}, "e")
    assert merged == {"to": "a@b", "n": 3}


def test_substitution_keeps_the_parameter_type() -> None:
    params: dict[str, Any] = {"obj": {"k": [1, 2]}, "none": None, "flag": False}
    merged = build_arguments({"a": ":obj", "b": ":none", "c": ":flag"}, {}, params, "e")
    assert merged == {"a": {"k": [1, 2]}, "b": None, "c": False}


def test_substitution_in_event_arguments() -> None:
    merged = build_arguments({"to": "fixed"}, {"to": ":to"}, {"to": "given"}, "e")
    assert merged == {"to": "given"}


def test_nested_substitution_in_dicts_and_lists() -> None:
    merged = build_arguments(
        {"mail": {"to": [":a", "literal", {"cc": ":b"}], "deep": {"deeper": [[":a"]]}}},
        {},
        {"a": 1, "b": "two"},
        "e",
    )
    assert merged == {"mail": {"to": [1, "literal", {"cc": "two"}], "deep": {"deeper": [[1]]}}}


def test_keys_are_not_substituted() -> None:
    assert build_arguments({":a": "x"}, {}, {"a": 1}, "e") == {":a": "x"}


def test_substituted_values_are_not_substituted_again() -> None:
    assert build_arguments({"x": ":a"}, {}, {"a": ":b", "b": 2}, "e") == {"x": ":b"}


def test_other_values_pass_through() -> None:
    args: dict[str, Any] = {"n": 1, "f": 1.5, "t": True, "z": None}
    assert build_arguments(args, {}, {}, "e") == args


def test_missing_parameter_is_400_naming_event_and_parameter() -> None:
    where = "event 'email_event' (worker 'send_email')"
    with pytest.raises(HTTPError) as info:
        build_arguments({"to": ":email"}, {}, {"other": 1}, where)
    assert info.value.status == 400
    assert info.value.error == "bad_request"
    assert info.value.reason == f"{where} needs the parameter 'email' (in the query or body)"


def test_missing_parameter_deep_inside_is_400() -> None:
    with pytest.raises(HTTPError) as info:
        build_arguments({"a": [{"b": ":deep"}]}, {}, {}, "e")
    assert info.value.status == 400
    assert "'deep'" in info.value.reason


@pytest.mark.parametrize(
    ("value", "name"),
    [
        (":x", "x"),
        (":_", "_"),
        (":email", "email"),
        (":Email_2", "Email_2"),
        (":a.b-c", "a.b-c"),
        (":a1", "a1"),
    ],
)
def test_parameter_names(value: str, name: str) -> None:
    assert build_arguments({"v": value}, {}, {name: "ok"}, "e") == {"v": "ok"}


@pytest.mark.parametrize(
    "value",
    [
        ":",
        ": x",
        ":1abc",
        "::x",
        ":x y",
        " :x",
        ":x ",
        ":x\n",
        "x:y",
        "a:x",
        "mailto:x",
        ":-x",
        ":.x",
        ":é",
        "http://host:5984/",
    ],
)
def test_strings_that_are_not_parameters_stay_literal(value: str) -> None:
    params = {"x": "SUBSTITUTED", "1abc": "SUBSTITUTED", "": "SUBSTITUTED", "é": "SUBSTITUTED"}
    assert build_arguments({"v": value}, {}, params, "e") == {"v": value}


def test_request_parameters_query_wins_over_body() -> None:
    params = request_parameters({"a": "query", "q": "1"}, {"a": "body", "b": 2})
    assert params == {"a": "query", "q": "1", "b": 2}


@pytest.mark.parametrize("body", [None, "text", ["a", "b"], 3, {"base64": "AA=="}])
def test_request_parameters_only_object_bodies_count(body: Any) -> None:
    params = request_parameters({"q": "1"}, body)
    expected = {"q": "1", **body} if isinstance(body, dict) else {"q": "1"}
    assert params == expected


def test_query_and_body_parameters_substituted() -> None:
    params = request_parameters({"to": "from-query"}, {"to": "from-body", "n": 5})
    assert build_arguments({"to": ":to", "n": ":n"}, {}, params, "e") == {
        "to": "from-query",
        "n": 5,
    }


# -- path patterns -----------------------------------------------------------------------------


def matches(events: dict[str, EventSpec], method: str, path: str) -> dict[str, dict[str, str]]:
    return {m.event.id: dict(m.bindings) for m in find_matches(events, method, path)}


def test_literal_segments_match_themselves_only() -> None:
    events = table(spec("e", ("/timer/tick", None)))
    assert matches(events, "GET", "/timer/tick") == {"e": {}}
    for path in ("/timer/tock", "/Timer/tick", "/timer", "/timer/tick/x", "/timer/tick/"):
        assert http_error(events, "GET", path).status == 404


def test_name_segment_binds_one_segment() -> None:
    events = table(spec("e", ("/timer/:timerid", None)))
    assert matches(events, "GET", "/timer/42") == {"e": {"timerid": "42"}}
    assert matches(events, "GET", "timer/a.b-c") == {"e": {"timerid": "a.b-c"}}
    assert http_error(events, "GET", "/timer").status == 404
    assert http_error(events, "GET", "/other/42").status == 404


def test_name_segment_never_matches_across_a_slash() -> None:
    # The host passes decoded paths: "/user/a%2Fb" arrives as "/user/a/b".
    events = table(spec("e", ("/user/:name", None)))
    assert http_error(events, "GET", "/user/a/b").status == 404


def test_name_segment_needs_a_non_empty_segment() -> None:
    events = table(spec("e", ("/timer/:id", None), ("/pair/:a/:b", None)))
    assert http_error(events, "GET", "/timer/").status == 404
    assert http_error(events, "GET", "/pair//x").status == 404
    assert matches(events, "GET", "/pair/x/y") == {"e": {"a": "x", "b": "y"}}


def test_name_segment_binds_decoded_text_as_is() -> None:
    events = table(spec("e", ("/user/:name/mail", None)))
    assert matches(events, "GET", "/user/Zoë Smith/mail") == {"e": {"name": "Zoë Smith"}}
    assert matches(events, "GET", "/user/:x/mail") == {"e": {"name": ":x"}}
    assert matches(events, "GET", "/user/a%2Fb/mail") == {"e": {"name": "a%2Fb"}}


def test_trailing_slash_stays_significant_with_patterns() -> None:
    events = table(spec("a", ("/t/:id", None)), spec("b", ("/t/:id/", None)))
    assert matches(events, "GET", "/t/5") == {"a": {"id": "5"}}
    assert matches(events, "GET", "/t/5/") == {"b": {"id": "5"}}


def test_star_binds_the_rest_without_leading_slash() -> None:
    events = table(spec("e", ("/files/*", None)))
    assert matches(events, "GET", "/files/a") == {"e": {"*": "a"}}
    assert matches(events, "GET", "/files/a/b/c.txt") == {"e": {"*": "a/b/c.txt"}}
    assert matches(events, "GET", "/files/a/b/") == {"e": {"*": "a/b/"}}


def test_star_matches_zero_segments() -> None:
    events = table(spec("e", ("/files/*", None)))
    assert matches(events, "GET", "/files") == {"e": {"*": ""}}
    assert matches(events, "GET", "/files/") == {"e": {"*": ""}}
    assert http_error(events, "GET", "/file").status == 404
    assert http_error(events, "GET", "/filesx/a").status == 404


def test_star_after_names() -> None:
    events = table(spec("e", ("/db/:db/*", None)))
    assert matches(events, "GET", "/db/shop/docs/1") == {"e": {"db": "shop", "*": "docs/1"}}
    assert http_error(events, "GET", "/db").status == 404


def test_a_lone_star_matches_every_path() -> None:
    events = table(spec("all", ("/*", None)))
    assert matches(events, "GET", "/") == {"all": {"*": ""}}
    assert matches(events, "GET", "/x/y") == {"all": {"*": "x/y"}}


def test_segments_that_are_not_bindings_are_literal() -> None:
    events = table(spec("e", ("/a*b/:1x/x:y", None)))
    assert matches(events, "GET", "/a*b/:1x/x:y") == {"e": {}}
    assert http_error(events, "GET", "/aXb/:1x/x:y").status == 404
    assert http_error(events, "GET", "/a*b/7/x:y").status == 404


def test_more_specific_patterns_do_not_hide_others() -> None:
    events = table(
        spec("literal", ("/timer/tick", None)),
        spec("named", ("/timer/:id", None)),
        spec("rest", ("/timer/*", None)),
        spec("other", ("/timer/:id/x", None)),
    )
    assert matches(events, "GET", "/timer/tick") == {
        "literal": {},
        "named": {"id": "tick"},
        "rest": {"*": "tick"},
    }
    assert matches(events, "GET", "/timer/7") == {"named": {"id": "7"}, "rest": {"*": "7"}}


def test_matching_is_deterministic() -> None:
    events = table(*(spec(f"e{n}", (f"/{':a' if n % 2 else 'x'}/*", None)) for n in range(20)))
    first = matches(events, "GET", "/x/y")
    assert list(first) == sorted(first)
    for _ in range(5):
        assert matches(dict(reversed(list(events.items()))), "GET", "/x/y") == first


def test_first_matching_trigger_of_an_event_gives_its_bindings() -> None:
    events = table(spec("e", ("/t/:a", {"PUT"}), ("/t/:b", None), ("/t/:c", None)))
    assert matches(events, "GET", "/t/1") == {"e": {"b": "1"}}
    assert matches(events, "PUT", "/t/1") == {"e": {"a": "1"}}
    assert [m.event.id for m in find_matches(events, "GET", "/t/1")] == ["e"]


def test_fired_by_id_and_by_pattern_keeps_its_place_and_gets_the_bindings() -> None:
    events = table(spec("t/1", ("/t/:n", None)), spec("a", ("/t/:m", None)))
    found = find_matches(events, "GET", "/t/1")
    assert [(m.event.id, dict(m.bindings)) for m in found] == [
        ("t/1", {"n": "1"}),
        ("a", {"m": "1"}),
    ]


def test_fired_by_id_only_has_no_bindings() -> None:
    events = table(spec("e", ("/t/:n", None)))
    assert find_matches(events, "POST", "/e") == [Match(events["e"])]


def test_pattern_405_lists_the_methods_with_allow() -> None:
    events = table(spec("a", ("/timer/:id", {"GET"})), spec("b", ("/timer/*", {"PUT", "GET"})))
    error = http_error(events, "DELETE", "/timer/5")
    assert (error.status, error.error) == (405, "method_not_allowed")
    assert error.headers == {"Allow": "GET, PUT"}
    assert error.reason == "/timer/5 does not take DELETE; it takes GET, PUT"
    assert matches(events, "PUT", "/timer/5") == {"b": {"*": "5"}}


def test_pattern_that_does_not_match_the_path_gives_404_not_405() -> None:
    events = table(spec("a", ("/timer/:id", {"GET"})))
    assert http_error(events, "DELETE", "/timer/5/6").status == 404


def test_disabled_and_invalid_pattern_events_are_skipped() -> None:
    events = table(
        spec("off", ("/t/:id", None), disabled=True),
        spec("bad", ("/t/:id", None), error="broken"),
        spec("on", ("/t/*", {"GET"})),
    )
    assert matches(events, "GET", "/t/1") == {"on": {"*": "1"}}
    assert http_error(events, "POST", "/t/1").headers == {"Allow": "GET"}


def test_match_event_gives_trigger_parameters() -> None:
    event = parse_event(
        {
            "_id": "timer",
            "trigger": [
                {"path": "/timer/:timerid", "method": "GET", "parameters": {"id": ":timerid"}},
                {"path": "/timer/:timerid", "method": "POST"},
            ],
            "workers": [{"name": "w"}],
        }
    )
    found = match_event(event, "get", "/timer/7")
    assert (dict(found.bindings), dict(found.parameters)) == ({"timerid": "7"}, {"id": ":timerid"})
    found = match_event(event, "POST", "timer/7")
    assert (dict(found.bindings), dict(found.parameters)) == ({"timerid": "7"}, {})
    assert match_event(event, "POST", "/timer") == Match(event)


# -- bindings in arguments ---------------------------------------------------------------------


def test_path_bindings_win_over_query_and_body() -> None:
    params = request_parameters(
        {"id": "query", "q": "1"}, {"id": "body", "b": 2}, {"id": "path", "*": "rest/x"}
    )
    assert params == {"id": "path", "q": "1", "b": 2, "*": "rest/x"}


def test_bindings_used_in_arguments() -> None:
    params = request_parameters({}, None, {"timerid": "42", "*": "a/b"})
    merged = build_arguments(
        {"timer": ":timerid", "rest": ":*", "where": [":timerid"]}, {}, params, "e"
    )
    assert merged == {"timer": "42", "rest": "a/b", "where": ["42"]}


def test_trigger_parameters_lie_between_worker_and_event_arguments() -> None:
    merged = build_arguments(
        {"a": "worker", "b": "worker", "c": "worker"},
        {"c": "event"},
        {"timerid": "7"},
        "e",
        {"b": "trigger", "c": "trigger", "id": ":timerid"},
    )
    assert merged == {"a": "worker", "b": "trigger", "c": "event", "id": "7"}


def test_missing_binding_in_trigger_parameters_is_400() -> None:
    with pytest.raises(HTTPError) as info:
        build_arguments({}, {}, {}, "event 'e' (worker 'w')", {"id": ":timerid"})
    assert info.value.status == 400
    assert "'timerid'" in info.value.reason
