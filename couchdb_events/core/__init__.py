"""The core: ``Service`` (``service``) puts the parts together (registry, supervisor, runner,
triggers, routes), starts them in order and stops them; it knows nothing of the host it runs
under. Its start-up checks (reaching CouchDB, making sure of its databases) are ``startup``,
its status document ``status``.

May import: base, model, couch, workers, runs, triggers, api.
"""
