"""What an HTTP API answers when PostgreSQL (pg_tenancy) refuses a request.

pg_tenancy's errors carry precise SQLSTATEs (README, "Errors"); the mapping is the whole
contract, whichever driver raised the error.
"""

# SQLSTATE -> HTTP status.
STATUS_OF_SQLSTATE = {
    "28000": 401,  # no token, a bad or expired one, not a member: authenticate again
    "42501": 403,  # authenticated, but not allowed (another workspace's row, a spoofed setting)
    "22023": 400,  # a bad parameter (k out of range, wrong vector dimensions)
    "22004": 400,  # a NULL where a value is required
}


def sqlstate_of(error: BaseException) -> str | None:
    """The SQLSTATE of a psycopg, asyncpg or SQLAlchemy (wrapping psycopg) error, if any."""
    for candidate in (error, getattr(error, "orig", None), getattr(error, "__cause__", None)):
        code = getattr(candidate, "sqlstate", None)
        if isinstance(code, str):
            return code
    return None


def status_of(error: BaseException) -> int:
    """The HTTP status for a database error: 500 for anything pg_tenancy does not explain."""
    return STATUS_OF_SQLSTATE.get(sqlstate_of(error) or "", 500)
