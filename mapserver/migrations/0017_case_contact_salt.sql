-- The salt of the caller's contact: the signed creation carries only
-- sha256(salt || '\n' || contact), so that the case's public evidence never holds the contact.
ALTER TABLE city_case ADD COLUMN contact_salt text NOT NULL DEFAULT '';
