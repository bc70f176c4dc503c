"""What couchdb-events answers, whichever host the request came through.

The hosts (the aiohttp server for the daemon and ``serve`` modes, the CouchDB external channel)
only translate their request into a ``Request`` and an ``Answer`` back; every route lives here:

    /                  welcome
    /_status           status of the daemon, feeds, events and workers
    /_metrics          Prometheus metrics (``metrics``)
    /_activations      activation records (``activations``); POST <id>/retry, DELETE <id>
                       or POST <id>/cancel: run controls (``runs.controls``)
    /_dashboard        the live dashboard's page and files (``dashboard``)
    /_<anything else>  404 (names starting with _ are reserved)
    /<id or path>      fire (``?wait=<s>`` or ``Prefer: wait=<s>`` waits for the answers;
                       ``?delay=<s>`` / ``?at=<time>`` runs later; ``Idempotency-Key`` once)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

from .. import __version__
from ..config import Config
from ..errors import AlreadyFired, HTTPError
from ..model.events import EventSpec
from ..model.fire_options import due, idempotency_key
from ..model.request import Request
from ..runs.controls import Controls
from ..runs.dispatch import Dispatcher
from ..runs.runner import Runner
from .access import (
    Access,
    User,
    check_controls,
    check_events,
    check_metrics,
    check_status,
    credentials,
    metrics_access,
    needs_user,
)
from .activations import activations_answer, control_answer, control_of
from .answer import Answer
from .dashboard import dashboard_answer, is_dashboard

if TYPE_CHECKING:
    from .metrics import Metrics

MAX_WAIT = 300.0
_ANY_EVENT = EventSpec("", "")  # a plain event: what an unknown path is checked as


class StatusSource(Protocol):
    def status(self) -> dict[str, Any]: ...


def wait_seconds(query: Mapping[str, str], headers: Mapping[str, str]) -> float | None:
    """How long the caller wants to wait for the answers: ``?wait=`` or ``Prefer: wait=``."""
    value = query.get("wait")
    if value is None:
        for name, header in headers.items():
            if name.lower() != "prefer":
                continue
            for item in header.split(","):
                key, _, val = item.strip().partition("=")
                if key.strip().lower() == "wait":
                    value = val.strip()
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise HTTPError(
            400, "bad_request", f"wait must be a number of seconds, not {value!r}"
        ) from None
    if not 0 <= seconds <= MAX_WAIT:
        raise HTTPError(400, "bad_request", f"wait must be between 0 and {MAX_WAIT:.0f} seconds")
    return seconds


def _only(request: Request, *methods: str) -> None:
    if request.method not in methods:
        allow = ", ".join(methods)
        raise HTTPError(
            405, "method_not_allowed", f"{request.path} takes {allow}", {"Allow": allow}
        )


class Router:
    def __init__(
        self,
        dispatcher: Dispatcher,
        runner: Runner,
        status: StatusSource,
        config: Config,
        access: Access,
        controls: Controls | None = None,
    ) -> None:
        self._controls = controls
        self._dispatcher = dispatcher
        self._runner = runner
        self._status = status
        self._config = config
        self._access = access
        self._metrics: Metrics | None = None  # made at the first scrape

    async def _user(self, request: Request, required: bool) -> User | None:
        if request.user is not None:  # the host knows (CouchDB's userCtx in external mode)
            return request.user
        if not required and not credentials(request.headers):
            return None  # anonymous, and nothing to decide: no need to ask CouchDB
        return await self._access.user(request.headers, required)

    async def handle(self, request: Request, max_wait: float = MAX_WAIT) -> Answer:
        """The answer to ``request``; raises ``HTTPError`` for the error answers."""
        path = request.path
        if path == "/":
            _only(request, "GET", "HEAD")
            return Answer(200, {"couchdb_events": "Welcome", "version": __version__})
        if path in ("/_status", "/_status/"):
            _only(request, "GET", "HEAD")
            await self._check_status(request)
            return Answer(200, self._status.status())
        if path in ("/_metrics", "/_metrics/"):
            _only(request, "GET", "HEAD")
            public = metrics_access(self._config) == "public"
            check_metrics(self._config, await self._user(request, required=not public))
            return self._scrape()
        if path == "/_activations" or path.startswith("/_activations/"):
            return await self._activations(request)
        if is_dashboard(path):
            _only(request, "GET", "HEAD")
            if path != "/_dashboard":  # the redirect to the page shows nothing
                await self._check_status(request)
            return dashboard_answer(request)
        if path.startswith("/_"):
            raise HTTPError(404, "not_found", f"{path} is not an endpoint of couchdb-events")
        return await self._fire(request, max_wait)

    async def _activations(self, request: Request) -> Answer:
        """Reading records (who may read status), or retrying and cancelling runs."""
        control = control_of(request)
        if control is None:
            one = request.path.count("/") == 2  # /_activations/<id>
            _only(request, "GET", "HEAD", *(("DELETE",) if one else ()))
            await self._check_status(request)
            return await activations_answer(self._runner.activations, request)
        public = self._config.status_access == "public"
        check_controls(self._config, await self._user(request, required=not public))
        return await control_answer(self._controls, self._runner.activations, *control)

    def _scrape(self) -> Answer:
        if self._metrics is None:
            from .metrics import Metrics  # prometheus_client: imported when first scraped

            self._metrics = Metrics(self._runner.telemetry, self._status.status)
        return self._metrics.answer()

    async def _check_status(self, request: Request) -> None:
        """Status and activation records are for whom ``status_access`` says."""
        public = self._config.status_access == "public"
        check_status(self._config, await self._user(request, required=not public))

    async def _fire(self, request: Request, max_wait: float) -> Answer:
        wait = wait_seconds(request.query, request.headers)
        run_at = due(request.query, time.time())
        key = idempotency_key(request.headers)
        if key is None or self._controls is None:
            return await self._fire_now(request, max_wait, wait, run_at, None)
        async with self._controls.once(key):
            first, origin = await self._controls.replay(key)
            if first is None:
                try:
                    answer = await self._fire_now(
                        replace(request, origin=origin), max_wait, wait, run_at, key
                    )
                    self._controls.remember(key, answer.body)
                    return answer
                except AlreadyFired:  # another daemon fired it meanwhile
                    first, _origin = await self._controls.replay(key)
                    if first is None:
                        raise
            return Answer(202, first, {"Idempotent-Replayed": "true"})

    async def _fire_now(
        self, request: Request, max_wait: float, wait: float | None, run_at: float | None,
        key: str | None,
    ) -> Answer:  # fmt: skip
        try:
            events = self._dispatcher.match(request)
        except HTTPError as exc:
            # Where every caller must log in, strangers learn nothing, not even what exists.
            if self._config.require_valid_user and exc.status in (404, 405):
                user = await self._user(request, required=True)
                check_events(self._config, [_ANY_EVENT], user)
            raise
        user = await self._user(request, required=needs_user(self._config, events))
        check_events(self._config, events, user)
        if user is not request.user:
            request = replace(request, user=user)
        fired = self._dispatcher.prepare(request, events)
        for message in fired.messages:
            message.run_at, message.idempotency_key = run_at, key
        await self._runner.run(fired.runs)
        runs: list[dict[str, Any]] = [
            {"id": m.id, "event": m.event, "worker": m.worker} for m in fired.messages
        ]
        if wait:
            futures = [m.outcome for m in fired.messages if m.outcome is not None]
            done, _pending = await asyncio.wait(futures, timeout=min(wait, max_wait))
            if len(done) == len(futures):
                for run, future in zip(runs, futures, strict=True):
                    run.update(future.result().as_json())
                return Answer(200, {"ok": True, "events": fired.events, "runs": runs})
        return Answer(202, {"ok": True, "events": fired.events, "runs": runs})
