"""The model: pure code over plain data, no I/O. Event and worker documents as typed specs
(``events``, ``workers``, with ``fields`` and ``sources``), the request every host turns its
input into (``request``), a worker run's message and outcome (``message``), which events a
request fires and with which arguments (``matching``), when and how often it asks to run
(``fire_options``: ``?delay=``, ``?at=``, ``Idempotency-Key``), what is loaded now
(``registry``), what the server can do (``capabilities``), how a worker asks to be fenced in
(``sandbox``).

May import: the base modules (``errors``, ``config``, ``logs``) only.
"""
