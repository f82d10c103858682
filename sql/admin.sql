-- pg_tenancy: administration functions and the invalidation triggers (runs after the Rust functions).

-- Raises 42501 unless the session may administer pg_tenancy.
CREATE FUNCTION tenancy._require_admin(action text) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT pg_has_role(session_user, 'tenancy_admin', 'MEMBER')
       AND NOT pg_has_role(current_user, 'tenancy_admin', 'MEMBER') THEN
        RAISE EXCEPTION 'permission denied to %', action
            USING ERRCODE = '42501',
                  HINT = 'Only superusers and members of tenancy_admin administer pg_tenancy.';
    END IF;
END
$$;

-- Trusts an issuer with its JWKS; keys are vetted by tenancy._vet_jwks before anything is stored.
CREATE FUNCTION tenancy.add_issuer(issuer text, jwks jsonb, audience text DEFAULT NULL,
                                   algorithms text[] DEFAULT '{RS256}')
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tenancy._require_admin('add a trusted issuer');
    IF issuer IS NULL OR issuer = '' THEN
        RAISE EXCEPTION 'issuer must not be empty' USING ERRCODE = '22023';
    END IF;
    IF EXISTS (SELECT FROM tenancy.issuers i WHERE i.issuer = add_issuer.issuer) THEN
        RAISE EXCEPTION 'issuer "%" is already trusted', issuer
            USING ERRCODE = '42710', HINT = 'Rotate its keys with tenancy.set_jwks().';
    END IF;
    INSERT INTO tenancy.issuers (issuer, audience, algorithms, jwks, key_ids)
    VALUES (issuer, audience, algorithms, jwks, tenancy._vet_jwks(jwks, algorithms));
END
$$;

-- What changed between two key sets, by key id: ids added, ids removed, and ids kept whose key
-- material changed (a new key under an old id signs as well as a new id would).
CREATE FUNCTION tenancy._key_changes(old_jwks jsonb, new_jwks jsonb,
                                     OUT added text[], OUT removed text[], OUT replaced text[])
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH o AS (SELECT k OPERATOR(pg_catalog.->>) 'kid' AS kid, k FROM pg_catalog.jsonb_array_elements(coalesce(old_jwks OPERATOR(pg_catalog.->) 'keys', '[]')) k),
         n AS (SELECT k OPERATOR(pg_catalog.->>) 'kid' AS kid, k FROM pg_catalog.jsonb_array_elements(coalesce(new_jwks OPERATOR(pg_catalog.->) 'keys', '[]')) k)
    SELECT ARRAY(SELECT n.kid FROM n WHERE NOT EXISTS (SELECT FROM o WHERE o.kid OPERATOR(pg_catalog.=) n.kid) ORDER BY 1),
           ARRAY(SELECT o.kid FROM o WHERE NOT EXISTS (SELECT FROM n WHERE n.kid OPERATOR(pg_catalog.=) o.kid) ORDER BY 1),
           ARRAY(SELECT n.kid FROM n JOIN o ON o.kid OPERATOR(pg_catalog.=) n.kid WHERE n.k OPERATOR(pg_catalog.<>) o.k ORDER BY 1)
$$;

-- Records a change of an issuer's keys (nothing when nothing changed): a critical audit record
-- naming the key ids added (+), removed (-) and replaced (~).
CREATE FUNCTION tenancy._record_key_changes(issuer text, old_jwks jsonb, new_jwks jsonb, via text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c record;
BEGIN
    SELECT * INTO c FROM tenancy._key_changes(old_jwks, new_jwks);
    IF c.added OPERATOR(pg_catalog.<>) '{}' OR c.removed OPERATOR(pg_catalog.<>) '{}' OR c.replaced OPERATOR(pg_catalog.<>) '{}' THEN
        PERFORM tenancy._note_issuer_keys_changed(issuer, c.added, c.removed, c.replaced, via);
    END IF;
END
$$;

-- Replaces an issuer's keys (rotation: publish old and new keys together, then drop the old).
CREATE FUNCTION tenancy.set_jwks(issuer text, jwks jsonb)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    allowed text[];
    old_jwks jsonb;
BEGIN
    PERFORM tenancy._require_admin('replace an issuer''s keys');
    SELECT i.algorithms, i.jwks INTO allowed, old_jwks FROM tenancy.issuers i WHERE i.issuer = set_jwks.issuer FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'issuer "%" is not trusted', issuer
            USING ERRCODE = '22023', HINT = 'Add it with tenancy.add_issuer().';
    END IF;
    UPDATE tenancy.issuers i
       SET jwks = set_jwks.jwks, key_ids = tenancy._vet_jwks(set_jwks.jwks, allowed), updated_at = now()
     WHERE i.issuer = set_jwks.issuer;
    PERFORM tenancy._record_key_changes(issuer, old_jwks, set_jwks.jwks, 'tenancy.set_jwks');
END
$$;

-- Stops trusting an issuer: its tokens fail from the next statement on, in every session.
CREATE FUNCTION tenancy.drop_issuer(issuer text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tenancy._require_admin('drop a trusted issuer');
    DELETE FROM tenancy.issuers i WHERE i.issuer = drop_issuer.issuer;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'issuer "%" is not trusted', issuer USING ERRCODE = '22023';
    END IF;
END
$$;

-- Refuses every token carrying this WorkOS session id, from the next statement on.
CREATE FUNCTION tenancy.revoke_session(sid text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tenancy._require_admin('revoke a session');
    IF sid IS NULL OR sid = '' THEN
        RAISE EXCEPTION 'sid must not be empty' USING ERRCODE = '22023';
    END IF;
    INSERT INTO tenancy.revoked_sessions (sid, revoked_by) VALUES (sid, session_user)
    ON CONFLICT DO NOTHING;
END
$$;

REVOKE ALL ON FUNCTION tenancy.add_issuer(text, jsonb, text, text[]), tenancy.set_jwks(text, jsonb),
    tenancy.drop_issuer(text), tenancy.revoke_session(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy.add_issuer(text, jsonb, text, text[]), tenancy.set_jwks(text, jsonb),
    tenancy.drop_issuer(text), tenancy.revoke_session(text) TO tenancy_admin;

-- Every change to an identity table drops cached identities in every backend: an internal
-- statement-level trigger on each (src/state/invalidation.rs says why internal).
SELECT tenancy._create_invalidation_trigger(t)
  FROM unnest(ARRAY['issuers', 'workspaces', 'members', 'revoked_sessions']) t;
REVOKE ALL ON FUNCTION tenancy._create_invalidation_trigger(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION tenancy._note_issuer_keys_changed(text, text[], text[], text[], text),
    tenancy._record_key_changes(text, jsonb, jsonb, text) FROM PUBLIC;
