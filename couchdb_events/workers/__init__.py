"""Worker processes and their supervision: a revision's code on disk (``deploy``), one
process (``process``), its command line, limits and exit (``launch``), its bounded output lines
(``lines``), starting it (``starting``), when it is recycled (``recycling``), the line exchange
with it (``exchange``), explicit states (``states``), one pool per worker (``pool``) with its
waiting messages and idle processes (``intake``) and what its status shows (``status``), and
the supervisor, sole owner of the worker table (``supervisor``). A revision's dependencies
(``requirements.txt``, ``package.json``) become an environment shared by content
(``environments``), built by running pip or npm (``building``).

May import: base, model, couch.
"""
