"""What fires events besides HTTP: schedules (``schedule``), database changes (``changes``:
one follower per event reading and firing, its state, checkpoint and lease in ``holding``,
what a change row means in ``rows``, its long-polls run by ``threads``; started and stopped by
``followers``) and the lease that lets one daemon of several follow a trigger (``lease``).

May import: base, model, couch, workers, runs.
"""
