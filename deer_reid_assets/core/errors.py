"""What a failure means to the person who ran the command: one line and an exit status.

=====  =====================================================================================
exit   meaning
=====  =====================================================================================
1      bad input or a state the command refuses (the line says which and why)
3      the database connection was lost in the middle: everything committed before is kept;
       rerun the same command once the database is back and it resumes
4      another command is writing the same thing right now: rerun it when that one finishes
5      the database refused a value (the line names it)
=====  =====================================================================================
"""

from __future__ import annotations

EXIT_CONNECTION_LOST = 3
EXIT_BUSY = 4
EXIT_DATA_REFUSED = 5
_LOCK_CONFLICTS = {"40P01", "40001", "55P03"}  # deadlock, serialization failure, lock not available


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def describe(exc: BaseException) -> tuple[str, int] | None:
    """(one line, exit status) for a failure that is not a bug; None for anything else."""
    import sqlalchemy as sa

    from deer_reid_assets.core.embed.versions import EmbeddingBusy

    if isinstance(exc, EmbeddingBusy):
        return str(exc), EXIT_BUSY
    if isinstance(exc, sa.exc.DBAPIError):
        detail = _first_line(exc.orig if exc.orig is not None else exc)
        if getattr(exc.orig, "pgcode", None) in _LOCK_CONFLICTS:
            return f"another command is writing the same rows ({detail}): rerun this one", EXIT_BUSY
        if exc.connection_invalidated or isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError)):
            return (f"lost the database connection ({detail}); what was committed is kept: rerun the same command "
                    "once the database is back, it resumes"), EXIT_CONNECTION_LOST
        if isinstance(exc, sa.exc.IntegrityError):
            return (f"another command wrote the same rows at the same time ({detail}): rerun this one, it reuses "
                    "them"), EXIT_BUSY
        return f"the database refused a value ({detail})", EXIT_DATA_REFUSED
    if isinstance(exc, (sa.exc.PendingRollbackError, sa.exc.ResourceClosedError)):
        return (f"lost the database connection ({_first_line(exc)}); rerun the same command once the database is "
                "back, it resumes"), EXIT_CONNECTION_LOST
    return None
