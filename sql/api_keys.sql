-- pg_tenancy: API keys for services and scripts (runs after admin.sql and the Rust functions).

-- Keys as stored: only the SHA-256 of each key (see src/api_keys.rs for why a digest suffices).
-- Nobody but the extension's functions reads this table; people read tenancy.api_keys.
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
    revoked_at            timestamptz
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
       k.created_at, k.created_by, k.expires_at, u.last_used_at, k.revoked_at,
       k.previous_valid_until AS previous_key_valid_until
  FROM tenancy._api_key_store k
  LEFT JOIN tenancy.api_key_usage u ON u.key_id OPERATOR(pg_catalog.=) k.id;
COMMENT ON VIEW tenancy.api_keys IS 'API keys: id, workspace, name, key prefix, role, permissions, dates; never the secret';

REVOKE ALL ON tenancy._api_key_store, tenancy.api_key_usage, tenancy.api_keys FROM PUBLIC;
GRANT SELECT ON tenancy.api_keys TO tenancy_admin, tenancy_auditor;
GRANT SELECT ON tenancy._api_key_store TO tenancy_lookup;
GRANT SELECT, INSERT, UPDATE ON tenancy.api_key_usage TO tenancy_lookup;
REVOKE ALL ON FUNCTION tenancy._mint_api_key() FROM PUBLIC;

-- Raises 42501 unless the caller administers pg_tenancy or holds api_keys:manage in `workspace`.
CREATE FUNCTION tenancy._require_key_manager(workspace text, action text) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF pg_has_role(session_user, 'tenancy_admin', 'MEMBER') THEN
        RETURN;
    END IF;
    IF pg_catalog.current_setting('tenancy.token', true) <> ''
       OR pg_catalog.current_setting('tenancy.api_key', true) <> '' THEN
        IF tenancy.workspace_id() = workspace AND tenancy.has_permission('api_keys:manage') THEN
            RETURN;
        END IF;
    END IF;
    RAISE EXCEPTION 'permission denied to % for workspace "%"', action, workspace
        USING ERRCODE = '42501',
              HINT = 'Members of tenancy_admin, or an identity of that workspace with the api_keys:manage permission, manage its keys.';
END
$$;

-- Creates a key and returns its secret, the only time it is ever shown.
CREATE FUNCTION tenancy.create_api_key(workspace_id text, name text, role text DEFAULT NULL,
                                       permissions text[] DEFAULT '{}',
                                       expires_at timestamptz DEFAULT NULL, user_id text DEFAULT NULL)
RETURNS text LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    minted record;
BEGIN
    PERFORM tenancy._require_key_manager(workspace_id, 'create an api key');
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
    IF user_id IS NOT NULL AND NOT EXISTS (SELECT FROM tenancy.members m
                                            WHERE m.workspace_id = workspace_id AND m.user_id = user_id) THEN
        RAISE EXCEPTION 'user "%" is not a member of workspace "%"', user_id, workspace_id
            USING ERRCODE = '22023';
    END IF;
    SELECT * INTO minted FROM tenancy._mint_api_key();
    INSERT INTO tenancy._api_key_store (workspace_id, name, key_prefix, digest, role, permissions,
                                        user_id, expires_at)
    VALUES (workspace_id, name, minted.display, minted.digest, role, coalesce(permissions, '{}'),
            user_id, expires_at);
    RETURN minted.secret;
END
$$;

-- Revokes a key: it fails from the next statement on, in every backend.
CREATE FUNCTION tenancy.revoke_api_key(id uuid)
RETURNS void LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    workspace text;
BEGIN
    SELECT k.workspace_id INTO workspace FROM tenancy._api_key_store k WHERE k.id = id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'api key % does not exist', id USING ERRCODE = '22023';
    END IF;
    PERFORM tenancy._require_key_manager(workspace, 'revoke an api key');
    UPDATE tenancy._api_key_store k SET revoked_at = coalesce(k.revoked_at, now()) WHERE k.id = id;
END
$$;

-- Gives a key a new secret (returned once); the old secret stays valid for `grace`.
CREATE FUNCTION tenancy.rotate_api_key(id uuid, grace interval DEFAULT '0 seconds')
RETURNS text LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    workspace text;
    minted record;
BEGIN
    SELECT k.workspace_id INTO workspace FROM tenancy._api_key_store k WHERE k.id = id AND k.revoked_at IS NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'api key % does not exist or is revoked', id USING ERRCODE = '22023';
    END IF;
    PERFORM tenancy._require_key_manager(workspace, 'rotate an api key');
    IF grace IS NULL OR grace < '0 seconds' OR grace > '30 days' THEN
        RAISE EXCEPTION 'grace must be between 0 seconds and 30 days' USING ERRCODE = '22023';
    END IF;
    SELECT * INTO minted FROM tenancy._mint_api_key();
    UPDATE tenancy._api_key_store k
       SET previous_digest = CASE WHEN grace > '0 seconds' THEN k.digest END,
           previous_valid_until = CASE WHEN grace > '0 seconds' THEN now() + grace END,
           digest = minted.digest, key_prefix = minted.display
     WHERE k.id = id;
    RETURN minted.secret;
END
$$;

REVOKE ALL ON FUNCTION tenancy.create_api_key(text, text, text, text[], timestamptz, text),
    tenancy.revoke_api_key(uuid), tenancy.rotate_api_key(uuid, interval),
    tenancy._require_key_manager(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy.create_api_key(text, text, text, text[], timestamptz, text),
    tenancy.revoke_api_key(uuid), tenancy.rotate_api_key(uuid, interval) TO PUBLIC;

-- Every change to the keys drops cached identities in every backend.
CREATE TRIGGER invalidate_identities AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenancy._api_key_store
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy.invalidate_identities();
