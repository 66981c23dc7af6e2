"""The errors that end a run, and the exit status of every job: one place, so units and cron agree.

0 every sensor done or deliberately skipped; 1 a sensor failed or the database could not be used;
2 bad configuration; 75 (EX_TEMPFAIL) another run of the same job still holds its lock, which the
deploy units count as a skipped run, not a failure.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_LOCKED = 75


class ConfigError(ValueError):
    """Bad configuration: the message says where it is and what to do."""


class LockedError(RuntimeError):
    """Another run of the same job holds the lock."""
