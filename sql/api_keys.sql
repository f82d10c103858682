-- pg_tenancy: API keys for services and scripts (runs after admin.sql and the Rust functions).

-- Keys as stored: only the SHA-256 of each key (src/verify/api_key_format.rs says why a digest
-- suffices). Nobody but the extension's functions reads this table; people read tenancy.api_keys.
CREATE TABLE tenancy._api_key_store (
    id                    uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    workspace_id          text NOT NULL REFERENCES tenancy.workspaces ON DELETE CASCADE,
    name                  text NOT NULL CHECK (name <> ''),
    key_prefix            text NOT NULL,
    digest                bytea NOT NULL UNIQUE CHECK (length(digest) = 32),
    previous_digest       bytea UNIQUE CHECK (length(previous_digest) = 32),
    previous_valid_until  timestamptz,
    role                  text,
    permissions           text[] NOT NULL DEFAULT '{}',
    user_id               text,
    created_at            timestamptz NOT NULL DEFAULT now(),
    created_by            name NOT NULL DEFAULT session_user,
    expires_at            timestamptz,
    revoked_at            timestamptz,
    -- Added in 0.2.0 (API keys carry no more than whoever made them):
    created_by_identity   text,   -- who made it: user_… or api_key:<id> of an identity, role:<name> of an administrator
    creator_user_id       text,   -- the member whose rights it was made from (NULL: an administrator's key)
    rotated_at            timestamptz,
    rotated_by            text,
    revoked_by            text,
    -- Added in 0.3.0 (keys end with what made them):
    creator_session_id    text    -- the WorkOS session (sid) of the token that made or last rotated it; revoking it disables the key
);
SELECT pg_catalog.pg_extension_config_dump('tenancy._api_key_store', '');

-- When each key was last used (at most one update per key, backend and minute). Kept apart so
-- that these writes drop no cached identity.
CREATE TABLE tenancy.api_key_usage (
    key_id        uuid PRIMARY KEY REFERENCES tenancy._api_key_store ON DELETE CASCADE,
    last_used_at  timestamptz NOT NULL
);

-- What people see of the keys: never the secret nor its digest.
CREATE VIEW tenancy.api_keys AS
SELECT k.id, k.workspace_id, k.name, k.key_prefix, k.role, k.permissions, k.user_id,
       k.created_at, coalesce(k.created_by_identity, 'role:' OPERATOR(pg_catalog.||) k.created_by) AS created_by,
       k.expires_at, u.last_used_at, k.revoked_at,
       k.previous_valid_until AS previous_key_valid_until,
       k.rotated_at, k.rotated_by, k.revoked_by
  FROM tenancy._api_key_store k
  LEFT JOIN tenancy.api_key_usage u ON u.key_id OPERATOR(pg_catalog.=) k.id;
COMMENT ON VIEW tenancy.api_keys IS 'API keys: id, workspace, name, key prefix, role, permissions, dates; never the secret';

REVOKE ALL ON tenancy._api_key_store, tenancy.api_key_usage, tenancy.api_keys FROM PUBLIC;
GRANT SELECT ON tenancy.api_keys TO tenancy_admin, tenancy_auditor;
GRANT SELECT ON tenancy._api_key_store TO tenancy_lookup;
GRANT SELECT, INSERT, UPDATE ON tenancy.api_key_usage TO tenancy_lookup;
REVOKE ALL ON FUNCTION tenancy._mint_api_key() FROM PUBLIC;
REVOKE ALL ON FUNCTION tenancy._deny_admin(text, text) FROM PUBLIC;

-- Who manages the keys of `workspace` in this call: 'admin' for members of tenancy_admin (and
-- superusers), who control every key; 'identity' for an identity of that workspace that holds
-- api_keys:manage, whose keys are bounded by its own rights. Anyone else: 42501.
CREATE FUNCTION tenancy._key_manager(workspace text, action text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF pg_catalog.pg_has_role(session_user, 'tenancy_admin', 'MEMBER') THEN
        RETURN 'admin';
    END IF;
    IF pg_catalog.current_setting('tenancy.token', true) OPERATOR(pg_catalog.<>) ''
       OR pg_catalog.current_setting('tenancy.api_key', true) OPERATOR(pg_catalog.<>) '' THEN
        -- A rotated key's old secret, in its grace period, only authenticates: it manages no key
        -- (it would take over the key its holder was being cut off from).
        IF tenancy.workspace_id() OPERATOR(pg_catalog.=) workspace AND tenancy.has_permission('api_keys:manage')
           AND NOT coalesce(CAST(tenancy.claims() OPERATOR(pg_catalog.->>) 'previous_secret' AS boolean), false) THEN
            RETURN 'identity';
        END IF;
    END IF;
    PERFORM tenancy._deny_admin(pg_catalog.format('permission denied to %s for workspace "%s"', action, workspace),
              'Members of tenancy_admin, or an identity of that workspace with the api_keys:manage permission, manage its keys.');
    RETURN NULL;
END
$$;

-- Who is acting, as the key records show it: the identity's user (user_… or api_key:<id>), or
-- role:<name> for an administrator.
CREATE FUNCTION tenancy._key_actor(manager text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN manager OPERATOR(pg_catalog.=) 'admin'
                THEN 'role:' OPERATOR(pg_catalog.||) session_user
                ELSE tenancy.user_id() END
$$;

-- What ties a key made or rotated by the calling identity to it: the member whose rights it
-- carries and the WorkOS session of the token (for a key made by a key, that key's). Disabling
-- the member or revoking the session disables the key (src/identity/api_keys.rs).
CREATE FUNCTION tenancy._key_creator(OUT user_id text, OUT session_id text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF pg_catalog.current_setting('tenancy.api_key', true) OPERATOR(pg_catalog.<>) '' THEN
        SELECT coalesce(k.user_id, k.creator_user_id), k.creator_session_id INTO user_id, session_id
          FROM tenancy._api_key_store k
         WHERE CAST(k.id AS pg_catalog.text) OPERATOR(pg_catalog.=) (tenancy.claims() OPERATOR(pg_catalog.->>) 'api_key_id');
    ELSE
        user_id := tenancy.user_id();
        session_id := tenancy.session_id();
    END IF;
END
$$;

-- The latest expiry a key made by an identity may have now, NULL when unbounded:
-- tenancy.api_key_max_lifetime days, and for a key made by a key no later than that key's own end
-- (a one-hour key must not mint a 90-day one, again and again).
CREATE FUNCTION tenancy._key_expiry_bound() RETURNS timestamptz
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT LEAST(
               CASE WHEN d OPERATOR(pg_catalog.>) 0 THEN pg_catalog.now() OPERATOR(pg_catalog.+) pg_catalog.make_interval(days => d) END,
               CASE WHEN pg_catalog.current_setting('tenancy.api_key', true) OPERATOR(pg_catalog.<>) ''
                    THEN (SELECT i.expires_at FROM tenancy.identity() i) END)
      FROM (SELECT CAST(coalesce(nullif(pg_catalog.current_setting('tenancy.api_key_max_lifetime', true), ''), '90')
                        AS integer) AS d) s
$$;

-- What a key with these rights would carry beyond the calling identity's, in words; NULL when
-- nothing. Permissions must be a subset of the identity's; the role the identity's own or none
-- (WorkOS role slugs have no order, so "not above" can only mean "the same"); the user the
-- identity's own or none.
CREATE FUNCTION tenancy._beyond_identity(key_role text, key_permissions text[], key_user text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    extra text[];
BEGIN
    SELECT pg_catalog.array_agg(p.permission ORDER BY p.permission) INTO extra
      FROM pg_catalog.unnest(coalesce(key_permissions, '{}')) AS p(permission)
     WHERE NOT tenancy.has_permission(p.permission);
    IF extra IS NOT NULL THEN
        RETURN pg_catalog.format('permissions %s not held by the identity', pg_catalog.array_to_string(extra, ', '));
    END IF;
    IF key_role IS NOT NULL AND key_role IS DISTINCT FROM tenancy.role() THEN
        RETURN pg_catalog.format('role "%s" is not the identity''s own (%s)', key_role, coalesce(tenancy.role(), 'none'));
    END IF;
    IF key_user IS NOT NULL AND key_user IS DISTINCT FROM tenancy.user_id() THEN
        RETURN pg_catalog.format('user "%s" is not the identity''s own', key_user);
    END IF;
    RETURN NULL;
END
$$;

-- Creates a key and returns its secret, the only time it is ever shown. An identity's key carries
-- at most the identity's rights (tenancy._beyond_identity) and stays tied to the member whose
-- rights it was made from: disabling that member disables the key.
CREATE FUNCTION tenancy.create_api_key(workspace_id text, name text, role text DEFAULT NULL,
                                       permissions text[] DEFAULT '{}',
                                       expires_at timestamptz DEFAULT NULL, user_id text DEFAULT NULL)
RETURNS text LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    manager text;
    excess text;
    creator_user text;
    creator_session text;
    bound timestamptz;
    minted record;
BEGIN
    manager := tenancy._key_manager(workspace_id, 'create an api key');
    IF name IS NULL OR name = '' THEN
        RAISE EXCEPTION 'api key name must not be empty' USING ERRCODE = '22023';
    END IF;
    IF NOT EXISTS (SELECT FROM tenancy.workspaces w WHERE w.workspace_id = workspace_id) THEN
        RAISE EXCEPTION 'workspace "%" does not exist', workspace_id USING ERRCODE = '22023',
            HINT = 'Add it to tenancy.workspaces first.';
    END IF;
    IF expires_at IS NOT NULL AND expires_at <= now() THEN
        RAISE EXCEPTION 'expires_at must be in the future' USING ERRCODE = '22023';
    END IF;
    IF manager = 'identity' THEN
        excess := tenancy._beyond_identity(role, permissions, user_id);
        IF excess IS NOT NULL THEN
            PERFORM tenancy._deny_admin(pg_catalog.format('permission denied to create an api key beyond its creator''s rights: %s', excess),
                      'An identity creates keys with at most its own permissions, its own role or none, and its own user or none; members of tenancy_admin create any key.');
        END IF;
        -- A key made by a key inherits that key's member and session (none, for an
        -- administrator's key).
        SELECT c.user_id, c.session_id INTO creator_user, creator_session FROM tenancy._key_creator() c;
        bound := tenancy._key_expiry_bound();
        IF bound IS NOT NULL AND expires_at IS NULL THEN
            expires_at := bound;
        ELSIF bound IS NOT NULL AND expires_at > bound THEN
            RAISE EXCEPTION 'expires_at is beyond the longest lifetime of a key made by an identity (tenancy.api_key_max_lifetime = % days)',
                            pg_catalog.current_setting('tenancy.api_key_max_lifetime', true)
                USING ERRCODE = '22023',
                      HINT = 'Choose an earlier expires_at, or leave it out to get the longest; members of tenancy_admin make keys without this bound.';
        END IF;
    END IF;
    IF user_id IS NOT NULL AND NOT EXISTS (SELECT FROM tenancy.members m
                                            WHERE m.workspace_id = workspace_id AND m.user_id = user_id) THEN
        RAISE EXCEPTION 'user "%" is not a member of workspace "%"', user_id, workspace_id
            USING ERRCODE = '22023';
    END IF;
    SELECT * INTO minted FROM tenancy._mint_api_key();
    INSERT INTO tenancy._api_key_store (workspace_id, name, key_prefix, digest, role, permissions,
                                        user_id, expires_at, created_by_identity, creator_user_id,
                                        creator_session_id)
    VALUES (workspace_id, name, minted.display, minted.digest, role, coalesce(permissions, '{}'),
            user_id, expires_at, tenancy._key_actor(manager), creator_user, creator_session);
    RETURN minted.secret;
END
$$;

-- Revokes a key: it fails from the next statement on, in every backend. An identity revokes keys
-- within its own rights or that it created.
CREATE FUNCTION tenancy.revoke_api_key(id uuid)
RETURNS void LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    key record;
    manager text;
    excess text;
    actor text;
    stamp timestamptz;
BEGIN
    SELECT k.workspace_id, k.role, k.permissions, k.user_id, k.created_by_identity INTO key
      FROM tenancy._api_key_store k WHERE k.id = id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'api key % does not exist', id USING ERRCODE = '22023';
    END IF;
    manager := tenancy._key_manager(key.workspace_id, 'revoke an api key');
    IF manager = 'identity' AND key.created_by_identity IS DISTINCT FROM tenancy.user_id() THEN
        excess := tenancy._beyond_identity(key.role, key.permissions, key.user_id);
        IF excess IS NOT NULL THEN
            PERFORM tenancy._deny_admin(pg_catalog.format('permission denied to revoke api key %s: it carries more than the identity (%s) and was not created by it', id, excess),
                      'An identity revokes keys within its own rights or that it created; members of tenancy_admin revoke any key.');
        END IF;
    END IF;
    -- The actor and the time as values first: Citus refuses non-immutable calls inside CASE and
    -- coalesce of a statement on a reference table (0A000; docs/scale-out.md).
    actor := tenancy._key_actor(manager);
    stamp := now();
    UPDATE tenancy._api_key_store k
       SET revoked_at = coalesce(k.revoked_at, stamp),
           revoked_by = CASE WHEN k.revoked_at IS NULL THEN actor ELSE k.revoked_by END
     WHERE k.id = id;
END
$$;

-- Gives a key a new secret (returned once); the old secret stays valid for `grace`. An identity
-- rotates only keys within its own rights at the moment of rotation (a working secret is as much
-- as a new key), and the key is then tied to it as if it had made it: to its member and session,
-- with at most the lifetime of a key it makes. Disabling the rotator ends the secret it holds.
CREATE FUNCTION tenancy.rotate_api_key(id uuid, grace interval DEFAULT '0 seconds')
RETURNS text LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    key record;
    manager text;
    excess text;
    creator record;
    bound timestamptz;
    minted record;
BEGIN
    -- Locked: a rotation that waited for another must decide on the row as that one left it.
    -- (FOR UPDATE is the lock its UPDATE of the unique digest takes anyway; revoke_api_key takes
    -- FOR NO KEY UPDATE, which a key's users, holding FOR KEY SHARE through api_key_usage's
    -- foreign key, never block.)
    SELECT k.workspace_id, k.role, k.permissions, k.user_id, k.expires_at, k.creator_user_id, k.creator_session_id INTO key
      FROM tenancy._api_key_store k WHERE k.id = id AND k.revoked_at IS NULL FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'api key % does not exist or is revoked', id USING ERRCODE = '22023';
    END IF;
    manager := tenancy._key_manager(key.workspace_id, 'rotate an api key');
    IF grace IS NULL OR grace < '0 seconds' OR grace > '30 days' THEN
        RAISE EXCEPTION 'grace must be between 0 seconds and 30 days' USING ERRCODE = '22023';
    END IF;
    IF manager = 'identity' THEN
        excess := tenancy._beyond_identity(key.role, key.permissions, key.user_id);
        IF excess IS NOT NULL THEN
            PERFORM tenancy._deny_admin(pg_catalog.format('permission denied to rotate api key %s: it carries more than the identity (%s)', id, excess),
                      'An identity rotates only keys within its own rights; members of tenancy_admin rotate any key.');
        END IF;
        creator := tenancy._key_creator();
        bound := tenancy._key_expiry_bound();
        -- A grace period keeps the old secret working; for a key another member made, that old
        -- secret (which its maker holds) would outlive the maker's tie, which moves to the rotator.
        IF grace > '0 seconds' AND key.creator_user_id IS DISTINCT FROM creator.user_id THEN
            RAISE EXCEPTION 'a key made by someone else is rotated without grace' USING ERRCODE = '22023',
                HINT = 'Rotate with grace => ''0 seconds'': the old secret is held by whoever made the key; members of tenancy_admin may give grace.';
        END IF;
        key.creator_user_id := creator.user_id;
        key.creator_session_id := creator.session_id;
        IF bound IS NOT NULL AND (key.expires_at IS NULL OR key.expires_at > bound) THEN
            key.expires_at := bound;
        END IF;
    END IF;
    SELECT * INTO minted FROM tenancy._mint_api_key();
    UPDATE tenancy._api_key_store k
       SET previous_digest = CASE WHEN grace > '0 seconds' THEN k.digest END,
           previous_valid_until = CASE WHEN grace > '0 seconds' THEN now() + grace END,
           digest = minted.digest, key_prefix = minted.display,
           rotated_at = now(), rotated_by = tenancy._key_actor(manager),
           creator_user_id = key.creator_user_id, creator_session_id = key.creator_session_id,
           expires_at = key.expires_at
     WHERE k.id = id;
    RETURN minted.secret;
END
$$;

REVOKE ALL ON FUNCTION tenancy.create_api_key(text, text, text, text[], timestamptz, text),
    tenancy.revoke_api_key(uuid), tenancy.rotate_api_key(uuid, interval),
    tenancy._key_manager(text, text), tenancy._key_actor(text),
    tenancy._beyond_identity(text, text[], text), tenancy._key_creator(), tenancy._key_expiry_bound() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy.create_api_key(text, text, text, text[], timestamptz, text),
    tenancy.revoke_api_key(uuid), tenancy.rotate_api_key(uuid, interval) TO PUBLIC;

-- Every change to the keys drops cached identities in every backend.
SELECT tenancy._create_invalidation_trigger('_api_key_store');
