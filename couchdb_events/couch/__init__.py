"""The CouchDB side: the store (the only user of python-couchdb, always with a socket
timeout, its errors turned into the project's), ``_changes`` feeds, the state documents
several daemons agree on, ``setup``'s security, and the embedded PouchDB Server for the demo.

May import: base, model.
"""
