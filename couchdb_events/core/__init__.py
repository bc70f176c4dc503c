"""The core: ``Service`` puts the parts together (registry, supervisor, runner, triggers,
routes), starts them in order and stops them; it knows nothing of the host it runs under.

May import: base, model, couch, workers, runs, triggers, api.
"""
