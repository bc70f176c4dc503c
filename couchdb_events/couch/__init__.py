"""The CouchDB side: the store (``store``, always with a socket timeout, with ``cluster``'s
writes that settle something between daemons and ``queries``' Mango and views), its errors
turned into the project's (``failures``), ``_changes`` feeds, the state documents several
daemons agree on, ``setup``'s security, and the embedded PouchDB Server for the demo.

``store`` and ``failures`` (for python-couchdb's error types) are the only modules that import
``couchdb`` (python-couchdb).

May import: base, model.
"""
