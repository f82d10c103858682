// A minimal HTTP service (node:http; Express or Fastify route to the same handlers) whose every
// request runs as the caller: `Authorization: Bearer <WorkOS access token>`.
//
//   GET  /documents[?sleep=seconds]   the caller's documents
//   POST /documents                   {"title", "embedding", "workspace_id"?} -> {"id"}
//   POST /search                      {"embedding", "k"?} -> tenancy.nearest's rows
//
// The per-request pattern: take a client, BEGIN, bind the token with
// set_config('tenancy.token', $1, true) (a bound parameter: never in statement text,
// pg_stat_activity or logs), run the request's statements, COMMIT. node-postgres sends
// parameterized queries as unnamed prepared statements, which is what PgBouncer 1.18 in
// transaction mode needs: do not give queries a `name` (a named statement would stay on one server
// connection while the next transaction runs on another).
//
// Prisma and Drizzle: bind the token inside their interactive transactions, e.g.
//   prisma.$transaction(async (tx) => { await tx.$executeRaw`SELECT set_config('tenancy.token', ${token}, true)`; ... })
//   db.transaction(async (tx) => { await tx.execute(sql`SELECT set_config('tenancy.token', ${token}, true)`); ... })
// (Prisma behind PgBouncer: `?pgbouncer=true` in its URL turns its prepared statements off.)

import http from 'node:http';
import pg from 'pg';

// SQLSTATE -> HTTP status (README, "Errors").
export const STATUS_OF_SQLSTATE = { '28000': 401, '42501': 403, '22023': 400, '22004': 400 };

const LIST = 'SELECT id::text, title, workspace_id FROM documents ORDER BY id';
const ADD = `INSERT INTO documents (title, embedding, workspace_id)
             VALUES ($1, CAST($2 AS vector), coalesce($3, tenancy.workspace_id())) RETURNING id::text`;
const NEAREST = `SELECT (n.item).id::text, (n.item).title, (n.item).workspace_id, n.distance
                   FROM tenancy.nearest(NULL::documents, 'embedding', CAST($1 AS vector), $2) n ORDER BY n.distance`;

/** Runs `work(client)` in a transaction that carries `token`. */
export async function asCaller(pool, token, work) {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    await client.query("SELECT set_config('tenancy.token', $1, true)", [token ?? '']);
    const result = await work(client);
    await client.query('COMMIT');
    return result;
  } catch (error) {
    await client.query('ROLLBACK').catch(() => {});
    throw error;
  } finally {
    client.release();
  }
}

const vectorText = (embedding) => `[${embedding.map(Number).join(',')}]`;

async function readJson(request) {
  let body = '';
  for await (const chunk of request) body += chunk;
  return body ? JSON.parse(body) : {};
}

/** The request handler over a pg.Pool. */
export function makeHandler(pool) {
  return async (request, response) => {
    const reply = (status, payload) => {
      response.writeHead(status, { 'content-type': 'application/json' });
      response.end(JSON.stringify(payload));
    };
    const auth = request.headers.authorization ?? '';
    const token = auth.toLowerCase().startsWith('bearer ') ? auth.slice(7).trim() : null;
    const url = new URL(request.url, 'http://localhost');
    try {
      if (request.method === 'GET' && url.pathname === '/documents') {
        const sleep = Number(url.searchParams.get('sleep') ?? 0);
        const rows = await asCaller(pool, token, async (c) => {
          if (sleep) await c.query('SELECT pg_sleep($1)', [sleep]);
          return (await c.query(LIST)).rows;
        });
        reply(200, rows);
      } else if (request.method === 'POST' && url.pathname === '/documents') {
        const body = await readJson(request);
        if (typeof body.title !== 'string' || !Array.isArray(body.embedding)) return reply(400, { error: 'bad request' });
        const [row] = await asCaller(pool, token, async (c) =>
          (await c.query(ADD, [body.title, vectorText(body.embedding), body.workspace_id ?? null])).rows);
        reply(201, { id: row.id });
      } else if (request.method === 'POST' && url.pathname === '/search') {
        const body = await readJson(request);
        if (!Array.isArray(body.embedding)) return reply(400, { error: 'bad request' });
        const rows = await asCaller(pool, token, async (c) =>
          (await c.query(NEAREST, [vectorText(body.embedding), body.k ?? 10])).rows);
        reply(200, rows);
      } else {
        reply(404, { error: 'not found' });
      }
    } catch (error) {
      // A refusal's SQLSTATE decides; its text is not echoed to the client.
      const status = STATUS_OF_SQLSTATE[error.code] ?? (error instanceof SyntaxError ? 400 : 500);
      reply(status, { error: { 401: 'unauthenticated', 403: 'forbidden', 400: 'bad request' }[status] ?? 'internal error' });
    }
  };
}

/** Starts the service: TENANCY_DSN (through PgBouncer), PORT. */
export function serve(dsn = process.env.TENANCY_DSN, port = Number(process.env.PORT ?? 3000)) {
  const pool = new pg.Pool({ connectionString: dsn, max: 10 });
  const server = http.createServer(makeHandler(pool));
  server.on('close', () => pool.end());
  return new Promise((resolve) => server.listen(port, '127.0.0.1', () => resolve(server)));
}

if (import.meta.url === `file://${process.argv[1]}`) {
  serve().then((s) => console.log(`listening on ${s.address().port}`));
}
