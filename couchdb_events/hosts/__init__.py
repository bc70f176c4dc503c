"""The hosts, which only translate: CouchDB's os_daemon channel (``osdaemon``: its config
``get`` lines and ``log`` lines), CouchDB's external protocol (``external``: request object
lines in, response lines out, each translated by ``external_codec``) and plain HTTP (``http``:
the aiohttp app and its listener). Each turns its input into a ``Request`` and the core's
``Answer`` back.

May import: every layer below (base to core).
"""
