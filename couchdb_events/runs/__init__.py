"""Runs: a request becomes messages (``dispatch``), messages become outcomes, retries and
chains (``runner``), each one an activation record written before the 202 (``activations``, one
object over: ``records``, what a record holds; ``months``, a database per month; ``writer``
over ``commit``, the group-committed writes; ``reading``, queried through ``views`` where the
server has no Mango), and which daemons are alive to resume the records of those that are gone
(``daemons``); retrying, cancelling, idempotent and delayed fires (``controls``).

May import: base, model, couch, workers.
"""
