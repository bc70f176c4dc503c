"""Worker processes and their supervision: a revision's code on disk (``deploy``), one
process and its limits (``process``), the line exchange with it (``exchange``), explicit
states (``states``), one pool per worker (``pool``) and the supervisor, sole owner of the
worker table (``supervisor``).

May import: base, model, couch.
"""
