"""The HTTP API, whoever carries it: every route (``router``), what a route answers
(``answer``), who may call it (``access``, through CouchDB's ``/_session``), the activation
records' listing (``activations``).

May import: base, model, couch, workers, runs, triggers.
"""
