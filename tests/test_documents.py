"""Event and worker documents read into specs; a bad document gives a spec with ``error``."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from couchdb_events.config import DEFAULT_INTERPRETERS, Config
from couchdb_events.model.events import EventSpec, Trigger, normalize_path, parse_event
from couchdb_events.model.workers import Mode, WorkerSpec, parse_worker, unsafe_attachment_name

# The seed's event document, with its JSON typo fixed.
SEED_EVENT: dict[str, Any] = {
    "_id": "email_event",
    "trigger": {"/send_email": {"method": "GET"}},
    "workers": {"send_email": {"recipient": "support@yourcompany.com"}},
}

ATTACHMENT = {
    "content_type": "application/javascript",
    "revpos": 1,
    "digest": "md5-x",
    "stub": True,
}

# The seed's worker document.
SEED_WORKER: dict[str, Any] = {
    "_id": "send_email",
    "arguments": {},
    "delegate": "sendmail.js",
    "type": "node",
    "_attachments": {"sendmail.js": dict(ATTACHMENT), "someOtherScript.js": dict(ATTACHMENT)},
}

CONFIG = Config()


def event(**fields: Any) -> dict[str, Any]:
    """The seed's event with ``fields`` replaced (a value of ``...`` removes the field)."""
    doc = copy.deepcopy(SEED_EVENT)
    for key, value in fields.items():
        if value is ...:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


def worker(**fields: Any) -> dict[str, Any]:
    """The seed's worker with ``fields`` replaced (a value of ``...`` removes the field)."""
    doc = copy.deepcopy(SEED_WORKER)
    for key, value in fields.items():
        if value is ...:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


def worker_error(doc: dict[str, Any], config: Config = CONFIG) -> str:
    spec = parse_worker(doc, config)
    assert spec.error is not None
    return spec.error


# -- event documents ---------------------------------------------------------------------------


def test_seed_event() -> None:
    spec = parse_event({**SEED_EVENT, "_rev": "1-abc"})
    assert spec == EventSpec(
        id="email_event",
        rev="1-abc",
        triggers=(Trigger("/send_email", frozenset({"GET"})),),
        workers=(("send_email", {"recipient": "support@yourcompany.com"}),),
        disabled=False,
        error=None,
    )


def test_missing_id_and_rev_are_empty_strings() -> None:
    spec = parse_event(event(_id=...))
    assert spec.id == ""
    assert spec.rev == ""
    assert spec.error is None


@pytest.mark.parametrize(
    ("method", "methods"),
    [
        ("GET", {"GET"}),
        ("post", {"POST"}),
        (["GET", "post", "Put"], {"GET", "POST", "PUT"}),
        (["GET", "GET"], {"GET"}),
    ],
)
def test_methods_are_upper_case_sets(method: Any, methods: set[str]) -> None:
    spec = parse_event(event(trigger={"/send_email": {"method": method}}))
    assert spec.error is None
    assert spec.triggers == (Trigger("/send_email", frozenset(methods)),)


@pytest.mark.parametrize("options", [None, {}, {"method": None}, {"other": 1}])
def test_trigger_without_method_takes_any(options: Any) -> None:
    spec = parse_event(event(trigger={"/send_email": options}))
    assert spec.error is None
    assert spec.triggers == (Trigger("/send_email", None),)


def test_trigger_paths_get_one_leading_slash() -> None:
    spec = parse_event(event(trigger={"send_email": {}, "//twice": {}, "/a/b/": {}}))
    assert [t.path for t in spec.triggers] == ["/send_email", "/twice", "/a/b/"]


def test_several_triggers_keep_their_order() -> None:
    spec = parse_event(event(trigger={"/b": {"method": "PUT"}, "/a": None}))
    assert spec.triggers == (Trigger("/b", frozenset({"PUT"})), Trigger("/a", None))


def test_event_without_trigger_is_valid() -> None:
    spec = parse_event(event(trigger=...))
    assert spec.error is None
    assert spec.triggers == ()
    spec = parse_event(event(trigger=None))
    assert spec.error is None


def test_several_workers_keep_their_order() -> None:
    spec = parse_event(event(workers={"b": {"x": 1}, "a": None, "c": {}}))
    assert spec.workers == (("b", {"x": 1}), ("a", {}), ("c", {}))


@pytest.mark.parametrize("disabled", [True, False])
def test_disabled(disabled: bool) -> None:
    spec = parse_event(event(disabled=disabled))
    assert spec.disabled is disabled
    assert spec.error is None


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"trigger": "/send_email"}, '"trigger" must be an object'),
        ({"trigger": ["/send_email"]}, 'trigger 1 must be an object like {"path"'),
        ({"trigger": 3}, "or a list, like"),
        ({"trigger": {"": {}}}, "a trigger path is empty"),
        ({"trigger": {"/x": "GET"}}, "trigger '/x' must map to an object"),
        ({"trigger": {"/x": {"method": 1}}}, "method must be a string or a list of strings"),
        ({"trigger": {"/x": {"method": []}}}, "method must be a string or a list of strings"),
        ({"trigger": {"/x": {"method": ["GET", 1]}}}, "method must be a string or a list"),
        ({"trigger": {"/x": {"method": {"GET": 1}}}}, "method must be a string or a list"),
        ({"workers": ...}, 'no "workers"'),
        ({"workers": None}, 'no "workers"'),
        ({"workers": {}}, '"workers" must be a non-empty object'),
        ({"workers": ["send_email"]}, 'worker 1 must be an object like {"name"'),
        ({"workers": []}, '"workers" must be a non-empty object'),
        ({"workers": "send_email"}, '"workers" must be a non-empty object'),
        (
            {"workers": {"send_email": [1]}},
            "the arguments for worker 'send_email' must be an object",
        ),
        ({"workers": {"send_email": "x"}}, "the arguments for worker 'send_email'"),
        ({"disabled": "yes"}, "disabled must be true or false"),
        ({"disabled": 0}, "disabled must be true or false"),
        ({"disabled": None}, "disabled must be true or false"),
    ],
)
def test_bad_event_gives_error_never_raises(fields: dict[str, Any], why: str) -> None:
    spec = parse_event({**event(**fields), "_rev": "3-x"})
    assert spec.error is not None
    assert spec.error.startswith("event 'email_event': ")
    assert why in spec.error
    assert spec.id == "email_event"
    assert spec.rev == "3-x"
    assert spec.triggers == ()
    assert spec.workers == ()


# -- LivelyCouch's list form and path patterns ------------------------------------------------

LIST_EVENT: dict[str, Any] = {
    "_id": "timer_event",
    "trigger": [
        {"path": "/timer/:timerid", "method": "GET", "parameters": {"id": ":timerid"}},
        {"path": "timer/all", "method": ["get", "POST"]},
        {"path": "/files/*"},
    ],
    "workers": [
        {"name": "send_email", "parameters": {"to": "a@x"}},
        {"name": "send_email", "parameters": {"to": "b@x"}},
        {"name": "log"},
    ],
    "disabled": False,
}


def test_list_form() -> None:
    spec = parse_event({**LIST_EVENT, "_rev": "1-l"})
    assert spec == EventSpec(
        id="timer_event",
        rev="1-l",
        triggers=(
            Trigger("/timer/:timerid", frozenset({"GET"}), {"id": ":timerid"}),
            Trigger("/timer/all", frozenset({"GET", "POST"})),
            Trigger("/files/*", None),
        ),
        workers=(("send_email", {"to": "a@x"}), ("send_email", {"to": "b@x"}), ("log", {})),
    )
    assert spec.triggers[0].segments == ("timer", ":timerid")


def test_list_form_and_object_form_give_the_same_spec() -> None:
    listed = parse_event(
        event(
            trigger=[{"path": "/send_email", "method": "GET"}],
            workers=[
                {"name": "send_email", "parameters": {"recipient": "support@yourcompany.com"}}
            ],
        )
    )
    assert listed == parse_event(SEED_EVENT)


def test_object_form_takes_trigger_parameters_too() -> None:
    spec = parse_event(event(trigger={"/t/:n": {"parameters": {"n": ":n"}}}))
    assert spec.triggers == (Trigger("/t/:n", None, {"n": ":n"}),)


@pytest.mark.parametrize("trigger", [[], None])
def test_empty_trigger_list_is_no_trigger(trigger: Any) -> None:
    spec = parse_event(event(trigger=trigger))
    assert spec.error is None
    assert spec.triggers == ()


@pytest.mark.parametrize("parameters", [None, {}])
def test_worker_entry_without_parameters(parameters: Any) -> None:
    spec = parse_event(event(workers=[{"name": "w", "parameters": parameters}]))
    assert spec.workers == (("w", {}),)


def test_list_form_disabled() -> None:
    spec = parse_event({**LIST_EVENT, "disabled": True})
    assert spec.disabled is True
    assert spec.error is None


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"trigger": [{"method": "GET"}]}, 'trigger 1 has no "path"'),
        ({"trigger": [{"path": ""}]}, "a trigger path is empty"),
        ({"trigger": [{"path": None}]}, "a trigger path is empty"),
        ({"trigger": [{"path": 5}]}, "trigger 1 (5): path must be text"),
        ({"trigger": [{"path": "/a"}, "/b"]}, "trigger 2 must be an object"),
        ({"trigger": [{"path": "/a", "method": 1}]}, "trigger 1 ('/a'): method must be a string"),
        ({"trigger": [{"path": "/a", "method": []}]}, "method must be a string or a list"),
        ({"trigger": [{"path": "/a", "parameters": [1]}]}, "parameters must be an object"),
        ({"trigger": {"/a": {"parameters": "x"}}}, "trigger '/a': parameters must be an object"),
        ({"trigger": [{"path": "/*/a"}]}, "'*' may only be the last segment"),
        ({"trigger": [{"path": "/a/*/*"}]}, "'*' may only be the last segment"),
        ({"trigger": [{"path": "/a/:x/:x"}]}, "the path binds 'x' twice"),
        ({"workers": [{"parameters": {}}]}, 'worker 1 has no "name"'),
        ({"workers": [{"name": ""}]}, 'worker 1 has no "name"'),
        ({"workers": [{"name": 3}]}, 'worker 1 has no "name"'),
        ({"workers": [{"name": "w"}, None]}, "worker 2 must be an object"),
        (
            {"workers": [{"name": "w", "parameters": [1]}]},
            "the parameters for worker 'w' must be an object",
        ),
        ({"workers": [{"name": "w", "parameters": "x"}]}, "the parameters for worker 'w'"),
    ],
)
def test_bad_list_form_gives_error_never_raises(fields: dict[str, Any], why: str) -> None:
    spec = parse_event(event(**fields))
    assert spec.error is not None
    assert spec.error.startswith("event 'email_event': ")
    assert why in spec.error
    assert (spec.triggers, spec.workers) == ((), ())


@pytest.mark.parametrize(
    ("path", "segments"),
    [
        ("/timer/:id", ("timer", ":id")),
        ("/files/*", ("files", "*")),
        ("*", ("*",)),
        ("/a/b/", ("a", "b", "")),
        ("/a*b/:x.y/*", ("a*b", ":x.y", "*")),
    ],
)
def test_pattern_paths_are_valid(path: str, segments: tuple[str, ...]) -> None:
    spec = parse_event(event(trigger=[{"path": path}]))
    assert spec.error is None
    assert spec.triggers[0].segments == segments


def test_normalize_path() -> None:
    assert normalize_path("") == "/"
    assert normalize_path("/") == "/"
    assert normalize_path("a") == "/a"
    assert normalize_path("///a/b/") == "/a/b/"


# -- worker documents --------------------------------------------------------------------------


def test_seed_worker() -> None:
    spec = parse_worker({**SEED_WORKER, "_rev": "2-def"}, CONFIG)
    assert spec == WorkerSpec(
        name="send_email",
        rev="2-def",
        delegate="sendmail.js",
        type="node",
        argv=("node", "sendmail.js"),
        arguments={},
        attachments=("sendmail.js", "someOtherScript.js"),
        mode=Mode.STREAM,
        processes=1,
        max_queue=1000,
        idle_timeout=60.0,
        error=None,
    )


def test_worker_argv_uses_the_configured_interpreter() -> None:
    config = Config.from_settings({}, interpreters={"node": "/opt/node --no-warnings"})
    spec = parse_worker(worker(), config)
    assert spec.argv == ("/opt/node", "--no-warnings", "sendmail.js")


def test_python_worker_argv() -> None:
    doc = worker(type="python", delegate="main.py", _attachments={"main.py": ATTACHMENT})
    assert parse_worker(doc, CONFIG).argv == ("python3", "-u", "main.py")


def test_worker_defaults_come_from_the_config() -> None:
    config = Config.from_settings({"processes": "3", "max_queue": "7", "idle_timeout": "2.5"})
    spec = parse_worker(worker(), config)
    assert (spec.processes, spec.max_queue, spec.idle_timeout) == (3, 7, 2.5)


def test_worker_arguments_kept() -> None:
    spec = parse_worker(worker(arguments={"from": "me", "n": [1, 2]}), CONFIG)
    assert spec.arguments == {"from": "me", "n": [1, 2]}


@pytest.mark.parametrize("arguments", [..., None, {}])
def test_worker_without_arguments(arguments: Any) -> None:
    spec = parse_worker(worker(arguments=arguments), CONFIG)
    assert spec.error is None
    assert spec.arguments == {}


def test_attachments_are_sorted() -> None:
    atts = {"z.js": ATTACHMENT, "lib/a.js": ATTACHMENT, "sendmail.js": ATTACHMENT}
    spec = parse_worker(worker(_attachments=atts), CONFIG)
    assert spec.attachments == ("lib/a.js", "sendmail.js", "z.js")


def test_delegate_in_a_subfolder() -> None:
    doc = worker(delegate="lib/main.js", _attachments={"lib/main.js": ATTACHMENT})
    spec = parse_worker(doc, CONFIG)
    assert spec.error is None
    assert spec.argv == ("node", "lib/main.js")


@pytest.mark.parametrize("delegate", [..., None, ""])
def test_missing_delegate(delegate: Any) -> None:
    assert 'no "delegate"' in worker_error(worker(delegate=delegate))


def test_delegate_not_an_attachment_lists_the_attachments() -> None:
    message = worker_error(worker(delegate="main.js"))
    assert message == (
        "worker 'send_email': delegate 'main.js' is not one of its attachments "
        "(it has: sendmail.js, someOtherScript.js)"
    )


@pytest.mark.parametrize("attachments", [..., None, {}])
def test_delegate_without_attachments(attachments: Any) -> None:
    assert "(it has: none)" in worker_error(worker(_attachments=attachments))


@pytest.mark.parametrize("delegate", [["sendmail.js"], 1, {"sendmail.js": 1}])
def test_delegate_that_is_not_a_string(delegate: Any) -> None:
    assert "is not one of its attachments" in worker_error(worker(delegate=delegate))


def test_attachments_not_an_object() -> None:
    assert "_attachments must be an object" in worker_error(worker(_attachments=["sendmail.js"]))


@pytest.mark.parametrize("kind", [..., None, "", 3])
def test_missing_type(kind: Any) -> None:
    assert 'no "type"' in worker_error(worker(type=kind))


def test_unknown_type_lists_the_known_types() -> None:
    message = worker_error(worker(type="cobol"))
    known = ", ".join(sorted(DEFAULT_INTERPRETERS))
    assert message == f"worker 'send_email': unknown type 'cobol' (known types: {known})"


def test_configured_type_is_known() -> None:
    config = Config.from_settings({}, interpreters={"cobol": "cobc -x"})
    spec = parse_worker(worker(type="cobol"), config)
    assert spec.error is None
    assert spec.argv == ("cobc", "-x", "sendmail.js")
    assert "cobol" in worker_error(worker(type="fortran"), config)


@pytest.mark.parametrize("arguments", [[1], "x", 5])
def test_arguments_not_an_object(arguments: Any) -> None:
    assert "arguments must be an object" in worker_error(worker(arguments=arguments))


@pytest.mark.parametrize(
    "name",
    ["/etc/passwd", "../x", "a/../../b", "a\x00b", "a\\b", "", "./a", "a//b", "a/", "..", "."],
)
def test_escaping_attachment_names_are_refused(name: str) -> None:
    assert unsafe_attachment_name(name) is not None
    atts = {"sendmail.js": ATTACHMENT, name: ATTACHMENT}
    message = worker_error(worker(_attachments=atts))
    assert f"attachment name {name!r}" in message
    assert "escape the worker's directory" in message


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "is empty"),
        ("a\x00b", "contains a NUL byte"),
        ("a\\b", "contains a backslash"),
        ("/etc/passwd", "is an absolute path"),
        ("../x", "has an empty, '.' or '..' path segment"),
        ("a/../../b", "has an empty, '.' or '..' path segment"),
        ("./a", "has an empty, '.' or '..' path segment"),
        ("a//b", "has an empty, '.' or '..' path segment"),
    ],
)
def test_unsafe_attachment_reasons(name: str, why: str) -> None:
    assert unsafe_attachment_name(name) == why


@pytest.mark.parametrize(
    "name", ["sendmail.js", "lib/a.js", "a/b/c.txt", ".hidden", "a..b", "...", "é.js", "a b"]
)
def test_safe_attachment_names(name: str) -> None:
    assert unsafe_attachment_name(name) is None


def test_escaping_attachment_is_refused_even_if_not_the_delegate() -> None:
    atts = {"sendmail.js": ATTACHMENT, "../../.bashrc": ATTACHMENT}
    spec = parse_worker(worker(_attachments=atts), CONFIG)
    assert spec.error is not None
    assert spec.argv == ()


@pytest.mark.parametrize(
    ("value", "mode"), [("stream", Mode.STREAM), ("reply", Mode.REPLY), ("once", Mode.ONCE)]
)
def test_modes(value: str, mode: Mode) -> None:
    spec = parse_worker(worker(mode=value), CONFIG)
    assert spec.error is None
    assert spec.mode is mode


@pytest.mark.parametrize("value", ["STREAM", "batch", "", None, 1, ["reply"]])
def test_bad_mode(value: Any) -> None:
    message = worker_error(worker(mode=value))
    assert f"mode must be one of stream, reply, once, not {value!r}" in message


@pytest.mark.parametrize("key", ["processes", "max_queue"])
def test_whole_number_fields(key: str) -> None:
    spec = parse_worker(worker(**{key: 5}), CONFIG)
    assert spec.error is None
    assert getattr(spec, key) == 5


@pytest.mark.parametrize("key", ["processes", "max_queue"])
@pytest.mark.parametrize("value", [0, -1, 1.5, 2.0, "2", None, True, False, [1]])
def test_bad_whole_number_fields(key: str, value: Any) -> None:
    message = worker_error(worker(**{key: value}))
    assert f"{key} must be a whole number of at least 1, not {value!r}" in message


@pytest.mark.parametrize("value", [1, 0.25, 3600])
def test_idle_timeout(value: float) -> None:
    spec = parse_worker(worker(idle_timeout=value), CONFIG)
    assert spec.error is None
    assert spec.idle_timeout == float(value)
    assert isinstance(spec.idle_timeout, float)


@pytest.mark.parametrize("value", [0, -1, -0.5, float("nan"), "60", None, True, False])
def test_bad_idle_timeout(value: Any) -> None:
    message = worker_error(worker(idle_timeout=value))
    assert "idle_timeout must be a positive number of seconds" in message


def test_bad_worker_keeps_name_and_rev() -> None:
    spec = parse_worker({**worker(type="cobol"), "_rev": "4-z"}, CONFIG)
    assert spec.name == "send_email"
    assert spec.rev == "4-z"
    assert spec.error is not None
    assert spec.error.startswith("worker 'send_email': ")


@pytest.mark.parametrize(
    "doc",
    [
        {},
        {"_id": "x"},
        {"_id": "x", "_attachments": 3},
        {"_id": "x", "delegate": 5, "_attachments": {"5": {}}},
        {"_id": "x", "delegate": "a", "type": ["node"], "_attachments": {"a": {}}},
    ],
)
def test_odd_worker_documents_never_raise(doc: dict[str, Any]) -> None:
    spec = parse_worker(doc, CONFIG)
    assert spec.error is not None
