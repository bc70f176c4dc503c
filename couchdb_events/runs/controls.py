"""Run controls: retrying a final run, cancelling an open one, idempotent and delayed fires.

* **Retry** (``POST /_events/_activations/<id>/retry``): a new run of a failed, timed-out,
  lost, rejected or cancelled one, with its arguments and request, ``attempt`` one more and
  ``retry_of`` naming it (which gets ``retried_as``). Its id derives from the old one, so that
  two daemons retrying it at once store one retry, and a run is retried once (retry the retry).
* **Cancel** (``DELETE /_events/_activations/<id>``): a waiting or queued run never starts, a
  running one has its process group killed; its state becomes ``cancelled``. A run of another
  daemon gets a cancel request (``cancel:<id>`` in the state database), which that daemon
  follows; a run of a daemon that is gone is written cancelled at once.
* **Idempotency** (``Idempotency-Key``): a fire's run ids derive from its key, so that a fire
  with a key seen in the last 24 hours (here, in any daemon, or before a restart) finds its
  records and answers with those runs instead of starting any (``replay``).
* **Delayed fires** (``?delay=`` / ``?at=``, read by ``model.fire_options``): the runner keeps
  the record ``scheduled`` until then. A cancel request for a run whose daemon died before it
  acted is honoured by the daemon resuming the run (``requested``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from typing import Any

from .. import logs
from ..errors import AlreadyFired, Conflict, HTTPError, NotFound, StoreError
from ..model.message import Outcome, derived_id
from ..model.registry import Registry
from ..workers.supervisor import Supervisor
from .daemons import Liveness
from .records import FINAL_STATES, RETRYABLE, final_fields, iso, message_of, parse_iso
from .runner import Runner

log = logs.get("controls")

KEY_TTL = 24 * 3600.0  # seconds a fire's key is honoured
REMEMBERED = 10_000  # keys whose answers this daemon keeps in memory
CANCEL_PREFIX = "cancel:"


def _conflict(reason: str) -> HTTPError:
    return HTTPError(409, "conflict", reason)


class Controls:
    def __init__(
        self, runner: Runner, registry: Registry, supervisor: Supervisor, state_db: str
    ) -> None:
        self._runner = runner
        self._registry = registry
        self._supervisor = supervisor
        self._state_db = state_db
        self._answers: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self._firing: dict[str, tuple[asyncio.Lock, int]] = {}  # key: its lock, fires using it
        self._tasks: set[asyncio.Task[None]] = set()
        runner.cancel_requests = self.requested

    # -- idempotency ----------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def once(self, key: str) -> AsyncIterator[None]:
        """One fire of ``key`` at a time in this daemon (the next finds the first's runs)."""
        lock, users = self._firing.get(key, (asyncio.Lock(), 0))
        self._firing[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._firing[key]
            if users == 1:
                del self._firing[key]
            else:
                self._firing[key] = (lock, users - 1)

    def remember(self, key: str, body: dict[str, Any]) -> None:
        self._answers[key] = (time.time(), body)
        while len(self._answers) > REMEMBERED:
            self._answers.popitem(last=False)

    async def replay(self, key: str) -> tuple[dict[str, Any] | None, str]:
        """The answer of the fire of ``key`` within the last 24 hours (None if none), and the
        origin the runs of a new fire of it derive their ids from."""
        now = time.time()
        remembered = self._answers.get(key)
        if remembered is not None and now - remembered[0] < KEY_TTL:
            return remembered[1], ""
        origin = f"idempotency\0{key}"
        activations = self._runner.activations
        if activations is None:
            return None, origin
        loop = asyncio.get_running_loop()
        while True:
            runs = await loop.run_in_executor(None, self._records, origin)
            if not runs:
                return None, origin
            first = runs[0]
            accepted = str(first.get("accepted", ""))
            if first.get("idempotency_key") != key or not accepted:
                return None, origin + "\0" + first["_id"]
            if now - (parse_iso(accepted) or 0.0) >= KEY_TTL:  # forgotten: a new fire, with new ids
                origin = f"{origin}\0{accepted}"
                continue
            events = list(dict.fromkeys(str(doc.get("event")) for doc in runs))
            body = {"ok": True, "events": events, "runs": [_run(doc) for doc in runs]}
            return body, origin

    def _records(self, origin: str) -> list[dict[str, Any]]:
        """The records of the fire ``origin`` names, in order (blocking)."""
        activations = self._runner.activations
        assert activations is not None
        found: list[dict[str, Any]] = []
        for number in range(1000):
            try:
                found.append(activations.get(derived_id(origin, number)))
            except NotFound:
                break
        return found

    # -- retry ----------------------------------------------------------------------------
    async def retry(self, run_id: str) -> dict[str, Any]:
        activations = self._runner.activations
        assert activations is not None
        loop = asyncio.get_running_loop()
        db, doc = await loop.run_in_executor(None, activations.reader.locate, run_id)
        state = doc.get("state")
        if state not in RETRYABLE:
            what = "is not over yet" if state not in FINAL_STATES else "succeeded"
            raise _conflict(
                f"run {run_id} {what} (state {state}): only a failed, timed-out, lost, "
                "rejected or cancelled run can be retried"
            )
        if doc.get("retried_as"):
            raise _conflict(f"run {run_id} was retried already as {doc['retried_as']}")
        worker = str(doc.get("worker", ""))
        spec = self._registry.workers.get(worker)
        if spec is None:
            raise HTTPError(404, "worker_not_found", f"worker {worker!r} does not exist any more")
        if spec.error:
            raise HTTPError(500, "worker_invalid", spec.error)
        self._supervisor.check(spec)
        message = replace(
            message_of(doc, loop.create_future()),  # its event, arguments, request, chain
            id=derived_id(f"retry\0{run_id}", 0),
            accepted=time.time(),
            attempt=int(doc.get("attempt", 1)) + 1,
            worker_rev=spec.rev,
            run_at=None,
            idempotency_key=None,
            retry_of=run_id,
        )
        try:
            await self._runner.run([(spec, message)])
        except AlreadyFired:
            raise _conflict(f"run {run_id} was retried already as {message.id}") from None
        if activations.writer.holds(run_id):
            activations.update(run_id, retried_as=message.id)
        else:
            mark = {**doc, "retried_as": message.id}
            try:
                await loop.run_in_executor(None, activations.store.put, db, mark)
            except StoreError as exc:  # the retry runs; only the back link is missing
                log.warning("run %s: cannot note its retry %s: %s", run_id, message.id, exc)
        log.info("run %s retried as %s (attempt %d)", run_id, message.id, message.attempt)
        run = {"id": message.id, "event": message.event, "worker": message.worker}
        return {"ok": True, "retry_of": run_id, "events": [message.event], "runs": [run]}

    # -- cancel ---------------------------------------------------------------------------
    async def cancel(self, run_id: str) -> tuple[int, dict[str, Any]]:
        """(status, body) of cancelling ``run_id``; raises 404 / 409."""
        was = await self._runner.cancel(run_id)
        if was is not None:
            log.info("run %s cancelled (was %s)", run_id, was)
            return 200, {"ok": True, "id": run_id, "state": "cancelled", "was": was}
        activations = self._runner.activations
        assert activations is not None
        loop = asyncio.get_running_loop()
        for _attempt in range(3):
            db, doc = await loop.run_in_executor(None, activations.reader.locate, run_id)
            state = doc.get("state")
            if state in FINAL_STATES:
                raise _conflict(f"run {run_id} is {state} already: it cannot be cancelled")
            liveness = Liveness(
                activations.store, activations.config.events_db, activations.owner, time.time()
            )
            gone = await loop.run_in_executor(None, liveness.gone, doc.get("daemon"))
            if not gone:
                await loop.run_in_executor(None, self._request_cancel, run_id)
                owner = doc.get("daemon") or {}
                body = {"ok": True, "id": run_id, "state": "cancelling", "was": state}
                return 202, {**body, "daemon": owner.get("id") if isinstance(owner, dict) else None}
            ended = final_fields(doc, Outcome("cancelled", None, "cancelled (its daemon was gone)"))
            try:
                await loop.run_in_executor(None, activations.store.put, db, {**doc, **ended})
            except Conflict:
                continue  # a daemon took it over meanwhile: look again
            return 200, {"ok": True, "id": run_id, "state": "cancelled", "was": state}
        raise HTTPError(503, "unavailable", f"run {run_id} keeps changing; try again")

    def _request_cancel(self, run_id: str) -> None:
        doc = {"_id": CANCEL_PREFIX + run_id, "type": "cancel", "run": run_id}
        assert self._runner.activations is not None
        with contextlib.suppress(Conflict):  # asked already
            self._runner.activations.store.put(
                self._state_db, {**doc, "requested": iso(time.time())}
            )

    def requested(self, run_ids: list[str]) -> set[str]:
        """Which of ``run_ids`` have a cancel request (blocking; for resuming)."""
        store = self._runner.activations.store if self._runner.activations else None
        if store is None or not run_ids:
            return set()
        docs = store.all_docs(self._state_db, [CANCEL_PREFIX + run_id for run_id in run_ids])
        return {str(doc.get("run")) for doc in docs}

    def apply_cancels(self, results: list[dict[str, Any]]) -> None:
        """Cancel requests seen in the state database's feed: cancel those runs held here."""
        for row in results:
            doc_id = str(row.get("id", ""))
            if doc_id.startswith(CANCEL_PREFIX) and not row.get("deleted"):
                task = asyncio.get_running_loop().create_task(self._requested(row.get("doc")))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _requested(self, doc: Any) -> None:
        if not isinstance(doc, dict) or not isinstance(doc.get("run"), str):
            return
        if await self._runner.cancel(doc["run"]) is None:
            return  # not ours
        log.info("run %s cancelled at another daemon's request", doc["run"])
        activations = self._runner.activations
        if activations is not None:
            gone = {"_id": doc["_id"], "_rev": doc.get("_rev"), "_deleted": True}
            loop = asyncio.get_running_loop()
            with contextlib.suppress(StoreError):
                write = activations.store.bulk_docs
                await loop.run_in_executor(None, write, self._state_db, [gone])


def _run(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": doc.get("_id"), "event": doc.get("event"), "worker": doc.get("worker")} | (
        {"state": doc["state"]} if "state" in doc else {}
    )
