"""The Python examples against the test cluster through PgBouncer in transaction mode
(scripts/test: PG_TENANCY_TEST_PORT is the cluster, PG_TENANCY_POOLER_PORT PgBouncer with at
most 4 server connections). Each driver's app is served by uvicorn on 127.0.0.1 and called over
HTTP: two users of two workspaces interleaved never see each other's rows, no token is 401, a
write into another workspace is 403, bad input 400, and the token never shows in
pg_stat_activity.
"""

import base64
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncio

import asyncpg
import psycopg
import pytest
import uvicorn
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from tenancy_example.app import make_app
from tenancy_example.retriever import TenancyRetriever
from tenancy_example.stores import STORES

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures"
ISSUER = "https://auth.test/user_management/client_TEST"
DATABASE = "tenancy_examples"
APP_ROLE = "tenancy_example_app"
SERVER = f"host=127.0.0.1 port={os.environ['PG_TENANCY_TEST_PORT']} user=postgres"
POOLED = f"postgresql://{APP_ROLE}@127.0.0.1:{os.environ['PG_TENANCY_POOLER_PORT']}/{DATABASE}"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(sub: str, org: str) -> str:
    """A WorkOS-shaped access token signed with the repository's test key (kid k1)."""
    key = serialization.load_der_private_key((FIXTURES / "test-issuer-rsa.pk8").read_bytes(), None)
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": sub, "org_id": org, "sid": f"session_{sub}", "iat": now, "exp": now + 600}
    signing_input = b64(json.dumps({"alg": "RS256", "kid": "k1", "typ": "JWT"}).encode()) + "." + b64(json.dumps(claims).encode())
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + b64(signature)


@pytest.fixture(scope="session")
def database():
    with psycopg.connect(SERVER + " dbname=postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DATABASE}")
        admin.execute(f"""DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
                              CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS; END IF; END $$""")
    jwks = (FIXTURES / "test-issuer-jwks.json").read_text()
    with psycopg.connect(SERVER + f" dbname={DATABASE}", autocommit=True) as db:
        db.execute("CREATE EXTENSION pg_tenancy; CREATE EXTENSION vector")
        db.execute("SELECT tenancy.add_issuer(%s, %s::jsonb)", (ISSUER, jwks))
        db.execute("""INSERT INTO tenancy.workspaces VALUES ('ws_acme', 'org_acme', 'Acme', NULL),
                                                            ('ws_globex', 'org_globex', 'Globex', NULL);
                      INSERT INTO tenancy.members VALUES ('ws_acme', 'user_alice', NULL, NULL),
                                                         ('ws_globex', 'user_bob', NULL, NULL);
                      CREATE TABLE documents (id bigserial PRIMARY KEY, workspace_id text NOT NULL,
                                              title text NOT NULL, embedding vector(3));
                      CREATE INDEX ON documents (workspace_id);
                      SELECT tenancy.protect('documents');""")
        db.execute("""INSERT INTO documents (workspace_id, title, embedding)
                      SELECT w, w || ' doc ' || i, format('[%s,%s,1]', i, i % 7)::vector
                        FROM generate_series(1, 20) i, unnest(ARRAY['ws_acme', 'ws_globex']) w""")
        db.execute(f"GRANT SELECT, INSERT ON documents TO {APP_ROLE}; GRANT USAGE ON SEQUENCE documents_id_seq TO {APP_ROLE}")
        # A pooled application role: no session-level tokens, no tokens in statement text.
        db.execute(f"ALTER ROLE {APP_ROLE} IN DATABASE {DATABASE} SET tenancy.session_tokens = refuse")
        db.execute(f"ALTER ROLE {APP_ROLE} IN DATABASE {DATABASE} SET tenancy.credentials_in_text = refuse")
    return {"alice": mint("user_alice", "org_acme"), "bob": mint("user_bob", "org_globex")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module", params=sorted(STORES))
def service(request, database):
    """The example app with one driver, served by uvicorn on loopback."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(make_app(STORES[request.param](POOLED)), host="127.0.0.1",
                                           port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}", database
    server.should_exit = True
    thread.join()


def call(base: str, method: str, path: str, token: str | None = None, body=None):
    request = urllib.request.Request(base + path, method=method, data=None if body is None else json.dumps(body).encode())
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_two_tenants_interleaved_never_see_each_other(service):
    base, tokens = service
    users = [("alice", "ws_acme"), ("bob", "ws_globex")] * 40

    def one(user):
        name, workspace = user
        status, rows = call(base, "GET", "/documents", tokens[name])
        assert status == 200, rows
        assert rows and {r["workspace_id"] for r in rows} == {workspace}, (name, rows)
        status, found = call(base, "POST", "/search", tokens[name], {"embedding": [3, 3, 1], "k": 5})
        assert status == 200 and len(found) == 5 and {r["workspace_id"] for r in found} == {workspace}, found
        return True

    # 16 concurrent requests onto PgBouncer's 4 server connections.
    with ThreadPoolExecutor(16) as pool:
        assert all(pool.map(one, users))


def test_writes_land_in_the_callers_workspace_and_a_spoof_is_forbidden(service):
    base, tokens = service
    status, created = call(base, "POST", "/documents", tokens["alice"], {"title": "alice's new", "embedding": [1, 0, 0]})
    assert status == 201, created
    status, rows = call(base, "GET", "/documents", tokens["bob"])
    assert created["id"] not in {r["id"] for r in rows}
    # A write naming another workspace: WITH CHECK refuses it (42501 -> 403).
    status, body = call(base, "POST", "/documents", tokens["alice"],
                        {"title": "planted", "embedding": [1, 0, 0], "workspace_id": "ws_globex"})
    assert (status, body) == (403, {"error": "forbidden"})


def test_no_token_is_401_and_bad_input_is_400(service):
    base, tokens = service
    assert call(base, "GET", "/documents")[0] == 401
    assert call(base, "GET", "/documents", "not-a-token")[0] == 401
    assert call(base, "POST", "/search", tokens["bob"], {"embedding": [1, 0], "k": 5})[0] == 400  # 22023
    assert call(base, "POST", "/search", tokens["bob"], {"embedding": [1, 0, 0], "k": 0})[0] == 400


def test_the_token_never_appears_in_pg_stat_activity(service):
    base, tokens = service
    seen_request, leaked = False, []
    done = threading.Event()

    def slow():
        call(base, "GET", "/documents?sleep=1", tokens["alice"])
        done.set()

    threading.Thread(target=slow).start()
    signature = tokens["alice"].rsplit(".", 1)[1]
    with psycopg.connect(SERVER + f" dbname={DATABASE}", autocommit=True) as watcher:
        while not done.is_set():
            for (query,) in watcher.execute(
                    "SELECT query FROM pg_stat_activity WHERE usename = %s", (APP_ROLE,)).fetchall():
                seen_request |= "pg_sleep" in (query or "")
                if signature in (query or "") or tokens["alice"][:40] in (query or ""):
                    leaked.append(query)
            time.sleep(0.02)
    assert seen_request, "the watcher saw the request's statements"
    assert leaked == []


def test_the_retriever_returns_the_callers_documents_with_metadata(database):
    retriever = TenancyRetriever(POOLED, embed=lambda text: [float(len(text)), 1.0, 1.0], k=3)
    documents = retriever.invoke("four", database["bob"])
    assert len(documents) == 3
    assert all(d.metadata["workspace_id"] == "ws_globex" and "embedding" not in d.metadata for d in documents)
    assert all(d.page_content.startswith("ws_globex doc") for d in documents)
    assert documents == sorted(documents, key=lambda d: d.metadata["distance"])


def test_the_driver_settings_a_transaction_pooler_needs(database):
    """Two clients whose transactions PgBouncer runs on its one server connection of the
    tenancy_examples_single alias: with the drivers' defaults, both name their prepared statements
    alike on that connection and the second fails (42P05); with the settings of stores.py, not."""
    single = POOLED.rsplit("/", 1)[0] + "/tenancy_examples_single"
    token = database["alice"]

    def psycopg_round(**settings):
        clients = [psycopg.connect(single, **settings) for _ in range(2)]
        try:
            for _ in range(6):  # psycopg prepares a query by name on its fifth execution
                for client in clients:
                    with client.transaction():
                        client.execute("SELECT set_config('tenancy.token', %s, true)", (token,))
                        client.execute("SELECT count(*) FROM documents").fetchone()
        finally:
            for client in clients:
                client.close()

    with pytest.raises(psycopg.errors.DuplicatePreparedStatement):
        psycopg_round()
    psycopg_round(prepare_threshold=None)

    async def asyncpg_round(**settings):
        # asyncpg names its statements uniquely per process, so the two clients do not collide;
        # what breaks is a cached statement missing on the server connection the pooler hands out
        # next, as after another client's DEALLOCATE ALL on the one server connection here.
        client = await asyncpg.connect(single, **settings)
        other = await asyncpg.connect(single, statement_cache_size=0)
        try:
            for _ in range(2):
                async with client.transaction():
                    await client.execute("SELECT set_config('tenancy.token', $1, true)", token)
                    await client.fetch("SELECT count(*) FROM documents")
                await other.execute("DEALLOCATE ALL")
        finally:
            await client.close()
            await other.close()

    with pytest.raises(asyncpg.exceptions.InvalidSQLStatementNameError):
        asyncio.run(asyncpg_round())
    asyncio.run(asyncpg_round(statement_cache_size=0))
