"""What the CouchDB server can do, where couchdb-events must know: learned once, at start.

Mango (``_find``, ``_index`` and ``_changes?filter=_selector``) came with CouchDB 2.0.
``Service.start`` reads the server's version (``learn``); then the activation records ask for
their Mango index, and a server that has no ``_index`` counts as having no Mango, whatever its
version says (``Activations``). Both happen on the loop, before the changes triggers start;
nothing changes it afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass

SELECTOR_NEEDS_MANGO = "selector needs CouchDB 2.0 or later{server}; use a design document filter"


def has_mango(version: str) -> bool:
    """CouchDB 2.0 and later. A version that does not start with a number (not CouchDB's
    form) is given the benefit of the doubt."""
    head = version.strip().split(".", 1)[0]
    return not head.isdigit() or int(head) >= 2


@dataclass
class Capabilities:
    version: str = "unknown"
    mango: bool = True  # until the version or the server says otherwise

    def learn(self, version: str) -> None:
        self.version = version
        self.mango = has_mango(version)

    def selector_error(self) -> str | None:
        """Why a changes trigger's ``selector`` cannot work here, or None."""
        if self.mango:
            return None
        return SELECTOR_NEEDS_MANGO.format(server=f" (this server: CouchDB {self.version})")
