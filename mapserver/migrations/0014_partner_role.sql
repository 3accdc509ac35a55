-- Partner systems (the city's hotline, 12345) reach CityGrid through the Open311 GeoReport v2
-- endpoint (/open311/v2) with a CityGrid client certificate: they submit complaints and read
-- back the status of what they submitted, and nothing else (no maps, no case lists).
INSERT INTO role (name, description) VALUES
    ('partner', '合作系统：经 Open311 接口提交诉求并查询其办理状态（如市级热线）');

-- A partner's submissions are unsigned machine submissions that an operator then accepts with
-- a signed act: one account may never be both. Keep equal to auth.policy.INCOMPATIBLE_ROLES.
INSERT INTO incompatible_role (role_a, role_b) VALUES ('operator', 'partner');
