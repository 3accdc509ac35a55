-- An install keeps an administrator.
--
-- An administrator could revoke its own `admin` role, or disable its own account, and when
-- it was the only one the install had none left: every administrative act was refused from
-- then on, and only `citygrid account bootstrap` with the CA's passphrase could mend it. Now
-- a change that would leave no active account holding `admin` is refused, whoever makes it
-- (the serving role's signed acts, the command line, the owner), under the constraint name
-- `last_administrator`. The advisory lock makes two such changes at once take turns, so two
-- administrators cannot each remove the other. An install that has no administrator yet
-- (before `account bootstrap`) may still disable its other accounts.

CREATE FUNCTION keep_an_administrator() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    IF TG_TABLE_NAME = 'account' THEN
        IF NOT EXISTS (SELECT 1 FROM account_role WHERE account_id = NEW.id AND role = 'admin')
        THEN
            RETURN NULL;  -- not an administrator
        END IF;
    ELSIF NOT EXISTS (SELECT 1 FROM account WHERE id = OLD.account_id AND active) THEN
        RETURN NULL;  -- a disabled account administers nothing
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('citygrid.last_administrator'));
    IF NOT EXISTS (SELECT 1 FROM account a JOIN account_role r ON r.account_id = a.id
                   WHERE r.role = 'admin' AND a.active) THEN
        RAISE EXCEPTION 'the install''s last active administrator may not lose the role '
                        '(grant admin to another account first)'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'last_administrator';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER keep_an_administrator_role AFTER DELETE ON account_role
    FOR EACH ROW WHEN (OLD.role = 'admin') EXECUTE FUNCTION keep_an_administrator();
CREATE TRIGGER keep_an_administrator_active AFTER UPDATE OF active ON account
    FOR EACH ROW WHEN (OLD.active AND NOT NEW.active) EXECUTE FUNCTION keep_an_administrator();
