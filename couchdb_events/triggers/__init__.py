"""What fires events besides HTTP: schedules (``schedule``), database changes
(``changes``, one follower per event, started and stopped by ``followers``) and the lease that
lets one daemon of several follow a trigger (``lease``).

May import: base, model, couch, workers, runs.
"""
