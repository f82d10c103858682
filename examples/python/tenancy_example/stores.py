"""The per-request pattern with four Python drivers: open a transaction, bind the caller's WorkOS
access token with ``set_config('tenancy.token', $1, true)`` (a bound parameter: the token never
appears in statement text, ``pg_stat_activity`` or logs), run the request's statements, commit.
Row-level security installed by ``tenancy.protect`` does the rest.

Behind PgBouncer in transaction mode (1.18 has no protocol-level prepared statements), a driver
must not keep server-side prepared statements across transactions, because the next transaction
may run on another server connection:

- psycopg 3: ``prepare_threshold=None`` (its default, 5, prepares a query run five times);
- asyncpg: ``statement_cache_size=0`` (its default, 100, keeps named statements);
- SQLAlchemy 2 over psycopg: the same ``prepare_threshold`` through ``connect_args``, and
  ``NullPool`` (PgBouncer is the pool).
Every statement below runs inside the transaction that bound the token, so unnamed statements
(what all three then use) stay on one server connection.
"""

import asyncio
from typing import Any

import asyncpg
import psycopg
from sqlalchemy import create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

LIST = "SELECT id, title, workspace_id FROM documents ORDER BY id"
ADD = (
    "INSERT INTO documents (title, embedding, workspace_id) "
    "VALUES ({0}, CAST({1} AS vector), coalesce({2}, tenancy.workspace_id())) RETURNING id"
)
NEAREST = (
    "SELECT (n.item).id, (n.item).title, (n.item).workspace_id, n.distance "
    "FROM tenancy.nearest(NULL::documents, 'embedding', CAST({0} AS vector), {1}) n ORDER BY n.distance"
)
SLEEP = "SELECT pg_sleep({0})"


def vector_text(embedding: list[float]) -> str:
    """pgvector's text form of an embedding (no client-side pgvector package needed)."""
    return "[" + ",".join(repr(float(x)) for x in embedding) + "]"


def rows_of(columns: list[str], rows: list[Any]) -> list[dict]:
    return [dict(zip(columns, row)) for row in rows]


class PsycopgStore:
    """psycopg 3, synchronous: one connection per request (run in a thread by the ASGI app)."""

    name = "psycopg"

    def __init__(self, dsn: str):
        self.dsn = dsn

    def _run(self, token: str | None, work):
        with psycopg.connect(self.dsn, prepare_threshold=None) as conn:
            with conn.transaction():
                conn.execute("SELECT set_config('tenancy.token', %s, true)", (token or "",))
                return work(conn)

    def _query(self, token, sql, params, columns):
        return self._run(token, lambda c: rows_of(columns, c.execute(sql, params).fetchall()))

    async def list_documents(self, token, sleep=0.0):
        def work(conn):
            if sleep:
                conn.execute(SLEEP.format("%s"), (sleep,))
            return rows_of(["id", "title", "workspace_id"], conn.execute(LIST).fetchall())

        return await asyncio.to_thread(self._run, token, work)

    async def add_document(self, token, title, embedding, workspace_id=None):
        sql = ADD.format("%s", "%s", "%s")
        rows = await asyncio.to_thread(
            self._query, token, sql, (title, vector_text(embedding), workspace_id), ["id"]
        )
        return rows[0]["id"]

    async def nearest(self, token, embedding, k):
        sql = NEAREST.format("%s", "%s")
        return await asyncio.to_thread(
            self._query, token, sql, (vector_text(embedding), k), ["id", "title", "workspace_id", "distance"]
        )


class _AsyncStore:
    """The three requests over an async driver: subclasses give `_query` (statements run in the
    token's transaction, the last one's rows returned as tuples) and their placeholders."""

    def __init__(self, dsn: str):
        self.dsn = dsn

    def placeholders(self, *types: str) -> list[str]:
        raise NotImplementedError

    async def _query(self, token, statements):
        raise NotImplementedError

    async def list_documents(self, token, sleep=0.0):
        statements = ([(SLEEP.format(*self.placeholders("float8")), (sleep,))] if sleep else []) + [(LIST, ())]
        return rows_of(["id", "title", "workspace_id"], await self._query(token, statements))

    async def add_document(self, token, title, embedding, workspace_id=None):
        sql = ADD.format(*self.placeholders("text", "text", "text"))
        rows = await self._query(token, [(sql, (title, vector_text(embedding), workspace_id))])
        return rows[0][0]

    async def nearest(self, token, embedding, k):
        sql = NEAREST.format(*self.placeholders("text", "int"))
        rows = await self._query(token, [(sql, (vector_text(embedding), k))])
        return rows_of(["id", "title", "workspace_id", "distance"], rows)


class PsycopgAsyncStore(_AsyncStore):
    """psycopg 3, asyncio."""

    name = "psycopg-async"

    def placeholders(self, *types):
        return ["%s"] * len(types)

    async def _query(self, token, statements):
        async with await psycopg.AsyncConnection.connect(self.dsn, prepare_threshold=None) as conn:
            async with conn.transaction():
                await conn.execute("SELECT set_config('tenancy.token', %s, true)", (token or "",))
                result = None
                for sql, params in statements:
                    cursor = await conn.execute(sql, params)
                    result = await cursor.fetchall()
                return result


class AsyncpgStore(_AsyncStore):
    """asyncpg: its statement cache off, every statement inside the token's transaction."""

    name = "asyncpg"

    def placeholders(self, *types):
        return [f"${i}::{t}" for i, t in enumerate(types, 1)]

    async def _query(self, token, statements):
        conn = await asyncpg.connect(self.dsn, statement_cache_size=0)
        try:
            async with conn.transaction():
                await conn.execute("SELECT set_config('tenancy.token', $1, true)", token or "")
                result = None
                for sql, params in statements:
                    result = await conn.fetch(sql, *params)
                return [tuple(r) for r in result]
        finally:
            await conn.close()


class SqlAlchemyStore:
    """SQLAlchemy 2 (ORM sessions over psycopg): a session hook binds the token per transaction."""

    name = "sqlalchemy"

    def __init__(self, dsn: str):
        url = "postgresql+psycopg://" + dsn.split("://", 1)[1]
        engine = create_engine(url, poolclass=NullPool, connect_args={"prepare_threshold": None})
        self.sessions = sessionmaker(engine)

        @event.listens_for(self.sessions, "after_begin")
        def bind_token(session: Session, transaction, connection):
            # Every transaction the session begins carries the request's token.
            connection.execute(
                text("SELECT set_config('tenancy.token', :token, true)"),
                {"token": session.info.get("token") or ""},
            )

    def _run(self, token, work):
        with self.sessions() as session:
            session.info["token"] = token
            with session.begin():
                return work(session)

    async def list_documents(self, token, sleep=0.0):
        def work(session):
            if sleep:
                session.execute(text("SELECT pg_sleep(:s)"), {"s": sleep})
            return [dict(r._mapping) for r in session.execute(text(LIST))]

        return await asyncio.to_thread(self._run, token, work)

    async def add_document(self, token, title, embedding, workspace_id=None):
        sql = text(ADD.format(":title", ":embedding", ":workspace"))
        params = {"title": title, "embedding": vector_text(embedding), "workspace": workspace_id}
        return await asyncio.to_thread(self._run, token, lambda s: s.execute(sql, params).scalar_one())

    async def nearest(self, token, embedding, k):
        sql = text(NEAREST.format(":embedding", ":k"))
        params = {"embedding": vector_text(embedding), "k": k}
        return await asyncio.to_thread(
            self._run, token, lambda s: [dict(r._mapping) for r in s.execute(sql, params)]
        )


STORES = {s.name: s for s in (PsycopgStore, PsycopgAsyncStore, AsyncpgStore, SqlAlchemyStore)}
