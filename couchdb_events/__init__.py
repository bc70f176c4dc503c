"""couchdb-events: an event system for Apache CouchDB.

Event documents say which HTTP requests fire them and which workers run with which
arguments; worker documents carry their code as attachments. See README.md.
"""

__version__ = "0.1.0"
