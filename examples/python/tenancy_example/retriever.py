"""A retriever in the LangChain style without the framework: ``invoke(question)`` embeds the
question and returns the caller's nearest documents through ``tenancy.nearest``, each with its
metadata. LangChain's ``BaseRetriever`` needs only ``_get_relevant_documents`` to return the same
list; nothing here depends on it.
"""

from dataclasses import dataclass, field
from typing import Callable

import psycopg
from psycopg import sql

from .stores import vector_text


@dataclass
class Document:
    page_content: str
    metadata: dict = field(default_factory=dict)


class TenancyRetriever:
    """k nearest documents of the caller's workspace; the token is bound per call."""

    def __init__(self, dsn: str, embed: Callable[[str], list[float]], table: str = "documents",
                 column: str = "embedding", content: str = "title", k: int = 4):
        self.dsn, self.embed, self.k = dsn, embed, k
        # Identifiers are the application's, not the user's: quoted once here.
        ident = sql.Identifier
        self.sql = sql.SQL(
            "SELECT (n.item).{content}, to_jsonb(n.item) - {column_text}, n.distance "
            "FROM tenancy.nearest(NULL::{table}, {column_literal}, CAST(%s AS vector), %s) n ORDER BY n.distance"
        ).format(content=ident(content), table=ident(table),
                 column_text=sql.Literal(column), column_literal=sql.Literal(column))

    def invoke(self, question: str, token: str) -> list[Document]:
        with psycopg.connect(self.dsn, prepare_threshold=None) as conn:
            with conn.transaction():
                conn.execute("SELECT set_config('tenancy.token', %s, true)", (token,))
                rows = conn.execute(self.sql, (vector_text(self.embed(question)), self.k)).fetchall()
        return [Document(page_content=content, metadata={**meta, "distance": distance})
                for content, meta, distance in rows]
