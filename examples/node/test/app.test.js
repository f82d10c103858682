// The Node example against the test cluster through PgBouncer in transaction mode (scripts/test:
// PG_TENANCY_TEST_PORT is the cluster, PG_TENANCY_POOLER_PORT PgBouncer with at most 4 server
// connections), served on 127.0.0.1 and called over HTTP.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createPrivateKey, sign } from 'node:crypto';
import { readFileSync } from 'node:fs';
import pg from 'pg';
import { serve } from '../app.js';

const FIXTURES = new URL('../../../tests/fixtures/', import.meta.url);
const ISSUER = 'https://auth.test/user_management/client_TEST';
const DATABASE = 'tenancy_examples_node';
const APP_ROLE = 'tenancy_example_app';
const SERVER = { host: '127.0.0.1', port: Number(process.env.PG_TENANCY_TEST_PORT), user: 'postgres' };
const POOLED = `postgresql://${APP_ROLE}@127.0.0.1:${process.env.PG_TENANCY_POOLER_PORT}/${DATABASE}`;

const b64 = (data) => Buffer.from(data).toString('base64url');

/** A WorkOS-shaped access token signed with the repository's test key (kid k1). */
function mint(sub, org) {
  const key = createPrivateKey({ key: readFileSync(new URL('test-issuer-rsa.pk8', FIXTURES)), format: 'der', type: 'pkcs8' });
  const now = Math.floor(Date.now() / 1000);
  const input = `${b64(JSON.stringify({ alg: 'RS256', kid: 'k1', typ: 'JWT' }))}.${b64(JSON.stringify(
    { iss: ISSUER, sub, org_id: org, sid: `session_${sub}`, iat: now, exp: now + 600 }))}`;
  return `${input}.${b64(sign('sha256', Buffer.from(input), key))}`;
}

async function superuser(database, statements) {
  const client = new pg.Client({ ...SERVER, database });
  await client.connect();
  try {
    for (const s of statements) await client.query(s);
  } finally {
    await client.end();
  }
}

let server, base;
const tokens = { alice: mint('user_alice', 'org_acme'), bob: mint('user_bob', 'org_globex') };

before(async () => {
  await superuser('postgres', [
    `DROP DATABASE IF EXISTS ${DATABASE} WITH (FORCE)`,
    `CREATE DATABASE ${DATABASE}`,
    `DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '${APP_ROLE}') THEN
         CREATE ROLE ${APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS; END IF; END $$`,
  ]);
  const jwks = readFileSync(new URL('test-issuer-jwks.json', FIXTURES), 'utf8');
  await superuser(DATABASE, [
    'CREATE EXTENSION pg_tenancy', 'CREATE EXTENSION vector',
    `SELECT tenancy.add_issuer('${ISSUER}', '${jwks}'::jsonb)`,
    `INSERT INTO tenancy.workspaces VALUES ('ws_acme', 'org_acme', 'Acme', NULL), ('ws_globex', 'org_globex', 'Globex', NULL)`,
    `INSERT INTO tenancy.members VALUES ('ws_acme', 'user_alice', NULL, NULL), ('ws_globex', 'user_bob', NULL, NULL)`,
    `CREATE TABLE documents (id bigserial PRIMARY KEY, workspace_id text NOT NULL, title text NOT NULL, embedding vector(3))`,
    'CREATE INDEX ON documents (workspace_id)',
    "SELECT tenancy.protect('documents')",
    `INSERT INTO documents (workspace_id, title, embedding)
       SELECT w, w || ' doc ' || i, format('[%s,%s,1]', i, i % 7)::vector
         FROM generate_series(1, 20) i, unnest(ARRAY['ws_acme', 'ws_globex']) w`,
    `GRANT SELECT, INSERT ON documents TO ${APP_ROLE}`,
    `GRANT USAGE ON SEQUENCE documents_id_seq TO ${APP_ROLE}`,
    `ALTER ROLE ${APP_ROLE} IN DATABASE ${DATABASE} SET tenancy.session_tokens = refuse`,
    `ALTER ROLE ${APP_ROLE} IN DATABASE ${DATABASE} SET tenancy.credentials_in_text = refuse`,
  ]);
  server = await serve(POOLED, 0);
  base = `http://127.0.0.1:${server.address().port}`;
});

after(() => new Promise((resolve) => server.close(resolve)));

async function call(method, path, token, body) {
  const headers = token === undefined ? {} : { authorization: `Bearer ${token}` };
  const response = await fetch(base + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  return [response.status, await response.json()];
}

test('two tenants interleaved never see each other', async () => {
  const users = Array.from({ length: 80 }, (_, i) => (i % 2 ? ['bob', 'ws_globex'] : ['alice', 'ws_acme']));
  await Promise.all(users.map(async ([name, workspace]) => {
    const [status, rows] = await call('GET', '/documents', tokens[name]);
    assert.equal(status, 200);
    assert.ok(rows.length > 0);
    assert.deepEqual([...new Set(rows.map((r) => r.workspace_id))], [workspace]);
    const [s2, found] = await call('POST', '/search', tokens[name], { embedding: [3, 3, 1], k: 5 });
    assert.equal(s2, 200);
    assert.equal(found.length, 5);
    assert.deepEqual([...new Set(found.map((r) => r.workspace_id))], [workspace]);
  }));
});

test('writes land in the caller\'s workspace and a spoof is forbidden', async () => {
  const [status, created] = await call('POST', '/documents', tokens.alice, { title: 'alice new', embedding: [1, 0, 0] });
  assert.equal(status, 201);
  const [, bobs] = await call('GET', '/documents', tokens.bob);
  assert.ok(!bobs.some((r) => r.id === created.id));
  assert.deepEqual(await call('POST', '/documents', tokens.alice, { title: 'planted', embedding: [1, 0, 0], workspace_id: 'ws_globex' }),
    [403, { error: 'forbidden' }]);
});

test('no token is 401 and bad input is 400', async () => {
  assert.equal((await call('GET', '/documents'))[0], 401);
  assert.equal((await call('GET', '/documents', 'not-a-token'))[0], 401);
  assert.equal((await call('POST', '/search', tokens.bob, { embedding: [1, 0], k: 5 }))[0], 400);
  assert.equal((await call('POST', '/search', tokens.bob, { embedding: [1, 0, 0], k: 0 }))[0], 400);
});

test('the token never appears in pg_stat_activity', async () => {
  const watcher = new pg.Client({ ...SERVER, database: DATABASE });
  await watcher.connect();
  let done = false, sawRequest = false;
  const leaked = [];
  const slow = call('GET', '/documents?sleep=1', tokens.alice).then(() => { done = true; });
  const signature = tokens.alice.split('.')[2];
  while (!done) {
    const { rows } = await watcher.query('SELECT query FROM pg_stat_activity WHERE usename = $1', [APP_ROLE]);
    for (const { query } of rows) {
      sawRequest ||= (query ?? '').includes('pg_sleep');
      if ((query ?? '').includes(signature) || (query ?? '').includes(tokens.alice.slice(0, 40))) leaked.push(query);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  await slow;
  await watcher.end();
  assert.ok(sawRequest, 'the watcher saw the request\'s statements');
  assert.deepEqual(leaked, []);
});
