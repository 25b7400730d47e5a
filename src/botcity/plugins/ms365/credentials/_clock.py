"""The time the plugin reads: this machine's clock, corrected by what Microsoft's servers
say it is.

A Runner whose clock is wrong would otherwise stamp the tokens it stores with wrong
expiry times, which every other bot of the credential believes. Each answer of the
identity platform carries a ``Date`` header; when it differs from the local clock by more
than :data:`TOLERANCE` seconds, the plugin uses the server's time from then on (msal's
expiry of a new token included: see ``TokenStore.add``).
"""

from __future__ import annotations

import email.utils
import logging
import threading
import time

log = logging.getLogger(__name__)

#: A difference this small is the ``Date`` header's one-second grain and the network.
TOLERANCE = 5.0


class Clock:
    """``now()``: epoch seconds, corrected by the offset :meth:`learn` measured."""

    def __init__(self) -> None:
        self.offset = 0.0  # local minus server
        self._lock = threading.Lock()

    def now(self) -> float:
        return time.time() - self.offset

    def learn(self, date_header: str | None) -> None:
        """Take the time a server's ``Date`` header says (ignored when absent or odd)."""
        if not date_header:
            return
        try:
            server = email.utils.parsedate_to_datetime(date_header).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return
        offset = time.time() - server
        with self._lock:
            if abs(offset - self.offset) <= TOLERANCE:
                return
            if abs(offset) <= TOLERANCE:
                self.offset = 0.0
                return
            self.offset = offset
        log.warning("This machine's clock is %.0f s %s Microsoft's; the plugin uses "
                    "Microsoft's time for token expiry", abs(offset),
                    "ahead of" if offset > 0 else "behind")


#: The process's clock (one machine, one clock); tests pass their own.
CLOCK = Clock()
