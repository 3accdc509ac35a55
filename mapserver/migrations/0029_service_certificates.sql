-- Service certificates: one of CityGrid's own services as a TLS client (two zones: the
-- gateway presents one to the renderer service). Like a server certificate it belongs to no
-- account.

ALTER TABLE certificate DROP CONSTRAINT certificate_kind_check;
ALTER TABLE certificate ADD CONSTRAINT certificate_kind_check
    CHECK (kind IN ('person', 'device', 'server', 'signing', 'service'));
ALTER TABLE certificate DROP CONSTRAINT certificate_check;
ALTER TABLE certificate ADD CONSTRAINT certificate_check
    CHECK (kind IN ('server', 'service') OR account_id IS NOT NULL);
