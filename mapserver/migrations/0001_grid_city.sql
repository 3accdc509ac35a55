-- The grid city: administrative areas, unit grids, organisations and accounts,
-- component and event classes, components, addresses and the basemap at two scales.
-- {{SRID}} is the install's projected CRS (settings.srid); every geometry is stored in it.

CREATE EXTENSION IF NOT EXISTS postgis;

CREATE TABLE install_info (
    key   text PRIMARY KEY,
    value text NOT NULL
);
INSERT INTO install_info (key, value) VALUES ('srid', '{{SRID}}');

-- Administrative areas: district -> street -> community -> unit grid.
CREATE TABLE district (
    code   char(6) PRIMARY KEY CHECK (code ~ '^[0-9]{6}$'),
    name   text NOT NULL,
    geom   geometry(MultiPolygon, {{SRID}}) NOT NULL,
    origin text NOT NULL DEFAULT 'import'
);
CREATE INDEX district_geom_idx ON district USING gist (geom);

CREATE TABLE street (
    code          char(9) PRIMARY KEY CHECK (code ~ '^[0-9]{9}$'),
    district_code char(6) NOT NULL REFERENCES district (code),
    name          text NOT NULL,
    geom          geometry(MultiPolygon, {{SRID}}) NOT NULL,
    origin        text NOT NULL DEFAULT 'import',
    CHECK (left(code, 6) = district_code)
);
CREATE INDEX street_geom_idx ON street USING gist (geom);

CREATE TABLE community (
    code        char(12) PRIMARY KEY CHECK (code ~ '^[0-9]{12}$'),
    street_code char(9) NOT NULL REFERENCES street (code),
    name        text NOT NULL,
    geom        geometry(MultiPolygon, {{SRID}}) NOT NULL,
    origin      text NOT NULL DEFAULT 'import',
    CHECK (left(code, 9) = street_code)
);
CREATE INDEX community_geom_idx ON community USING gist (geom);

-- 单元网格: 14 digits (2-digit serial) or 15 (3-digit serial, Beijing); serial 0 is the
-- community-level pseudo grid.
CREATE TABLE unit_grid (
    code             varchar(15) PRIMARY KEY CHECK (code ~ '^[0-9]{14,15}$'),
    community_code   char(12) NOT NULL REFERENCES community (code),
    serial           integer GENERATED ALWAYS AS (substr(code, 13)::integer) STORED,
    area_m2          double precision NOT NULL CHECK (area_m2 > 0),
    land_use         text NOT NULL DEFAULT '',
    management_level text NOT NULL DEFAULT '',
    responsible      text NOT NULL DEFAULT '',
    geom             geometry(MultiPolygon, {{SRID}}) NOT NULL,
    origin           text NOT NULL DEFAULT 'import',
    CHECK (left(code, 12) = community_code)
);
CREATE INDEX unit_grid_geom_idx ON unit_grid USING gist (geom);
CREATE INDEX unit_grid_community_idx ON unit_grid (community_code);

-- Organisations and accounts; certificates are attached to accounts by the gateway.
CREATE TABLE organisation (
    code        text PRIMARY KEY CHECK (code ~ '^[A-Za-z0-9_.-]{1,64}$'),
    name        text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('district', 'supervision_centre', 'command_centre',
                                              'bureau', 'street_office', 'community', 'other')),
    street_code char(9) REFERENCES street (code) ON DELETE SET NULL,
    parent_code text REFERENCES organisation (code),
    active      boolean NOT NULL DEFAULT true
);

CREATE TABLE role (
    name        text PRIMARY KEY,
    description text NOT NULL
);
INSERT INTO role (name, description) VALUES
    ('viewer', '地图浏览：查看地图图片、案件列表与统计'),
    ('inspector', '监督员：上报问题、核实与核查'),
    ('operator', '受理员：受理举报、登记案件'),
    ('shift_leader', '值班长：立案、结案'),
    ('dispatcher', '派遣员：派遣案件至专业部门'),
    ('bureau_handler', '专业部门：处置案件并签署结果'),
    ('street_supervisor', '街道督办：提醒与督办本街道案件'),
    ('leader', '领导：查看全区态势与评价'),
    ('security_officer', '安全审计员：审阅访问审计'),
    ('admin', '系统管理员：用户、证书、机构、代码表、数据');

CREATE TABLE account (
    id           bigserial PRIMARY KEY,
    name         text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9_.-]{0,63}$'),
    display_name text NOT NULL DEFAULT '',
    org_code     text REFERENCES organisation (code),
    active       boolean NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now(),
    disabled_at  timestamptz
);

CREATE TABLE account_role (
    account_id bigint NOT NULL REFERENCES account (id) ON DELETE CASCADE,
    role       text NOT NULL REFERENCES role (name),
    granted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, role)
);

-- Code tables. Time limits count working time on the work calendar.
CREATE TABLE component_class (
    major            char(2) NOT NULL CHECK (major ~ '^[0-9]{2}$'),
    minor            varchar(3) NOT NULL CHECK (minor ~ '^[0-9]{2,3}$'),
    major_name       text NOT NULL,
    name             text NOT NULL,
    symbol           text NOT NULL DEFAULT 'dot',
    department       text NOT NULL DEFAULT '',
    filing_condition text NOT NULL DEFAULT '',
    time_limit       numeric NOT NULL DEFAULT 1 CHECK (time_limit > 0),
    time_unit        text NOT NULL DEFAULT 'working_days'
                     CHECK (time_unit IN ('working_hours', 'working_days')),
    PRIMARY KEY (major, minor)
);

CREATE TABLE event_class (
    major            char(2) NOT NULL CHECK (major ~ '^[0-9]{2}$'),
    minor            varchar(3) NOT NULL CHECK (minor ~ '^[0-9]{2,3}$'),
    major_name       text NOT NULL,
    name             text NOT NULL,
    department       text NOT NULL DEFAULT '',
    filing_condition text NOT NULL DEFAULT '',
    closing_condition text NOT NULL DEFAULT '',
    time_limit       numeric NOT NULL CHECK (time_limit > 0),
    time_unit        text NOT NULL CHECK (time_unit IN ('working_hours', 'working_days')),
    PRIMARY KEY (major, minor)
);

-- 部件: 6 district + 2 major + 2 (or 3) minor + 6 serial. Class columns derive from the code.
CREATE TABLE component (
    code            varchar(17) PRIMARY KEY CHECK (code ~ '^[0-9]{16,17}$'),
    major           char(2) GENERATED ALWAYS AS (substr(code, 7, 2)) STORED,
    minor           varchar(3) GENERATED ALWAYS AS (substr(code, 9, length(code) - 14)) STORED,
    name            text NOT NULL,
    state           text NOT NULL DEFAULT 'intact'
                    CHECK (state IN ('intact', 'damaged', 'missing', 'occupied')),
    in_use          boolean NOT NULL DEFAULT true,
    responsible_dept text NOT NULL DEFAULT '',
    owner_dept      text NOT NULL DEFAULT '',
    maintainer_dept text NOT NULL DEFAULT '',
    grid_code       varchar(15) NOT NULL REFERENCES unit_grid (code),
    data_source     text NOT NULL DEFAULT 'surveyed'
                    CHECK (data_source IN ('surveyed', 'topographic_map', 'field_annotated', 'other')),
    created_on      date NOT NULL DEFAULT current_date,
    changed_on      date NOT NULL DEFAULT current_date,
    geom            geometry(Point, {{SRID}}) NOT NULL,
    origin          text NOT NULL DEFAULT 'import',
    FOREIGN KEY (major, minor) REFERENCES component_class (major, minor)
);
CREATE INDEX component_geom_idx ON component USING gist (geom);
CREATE INDEX component_grid_idx ON component (grid_code);
CREATE INDEX component_class_idx ON component (major, minor);

-- Addresses for geocoding: house numbers along roads and named landmarks, each a point.
CREATE TABLE address (
    id           bigserial PRIMARY KEY,
    kind         text NOT NULL CHECK (kind IN ('house', 'landmark')),
    road_name    text NOT NULL DEFAULT '',
    house_number integer CHECK (house_number > 0),
    name         text NOT NULL DEFAULT '',
    full_text    text NOT NULL,
    grid_code    varchar(15) REFERENCES unit_grid (code),
    geom         geometry(Point, {{SRID}}) NOT NULL,
    origin       text NOT NULL DEFAULT 'import',
    CHECK (kind <> 'house' OR (road_name <> '' AND house_number IS NOT NULL)),
    CHECK (kind <> 'landmark' OR name <> '')
);
CREATE INDEX address_geom_idx ON address USING gist (geom);
CREATE INDEX address_road_idx ON address (road_name, house_number);
CREATE INDEX address_name_idx ON address (name) WHERE kind = 'landmark';

-- Basemap at two scales (1:500 and 1:2000); the 1:2000 set generalises the 1:500 set.
-- Partial spatial indexes per scale serve the renderer's "WHERE scale = N" queries.
CREATE TABLE building (
    id           bigserial PRIMARY KEY,
    scale        integer NOT NULL CHECK (scale IN (500, 2000)),
    name         text NOT NULL DEFAULT '',
    road_name    text NOT NULL DEFAULT '',
    house_number text NOT NULL DEFAULT '',
    floors       integer CHECK (floors > 0),
    structure    text NOT NULL DEFAULT '',
    geom         geometry(MultiPolygon, {{SRID}}) NOT NULL,
    origin       text NOT NULL DEFAULT 'import'
);

CREATE TABLE road_surface (
    id     bigserial PRIMARY KEY,
    scale  integer NOT NULL CHECK (scale IN (500, 2000)),
    kind   text NOT NULL DEFAULT 'road',
    geom   geometry(MultiPolygon, {{SRID}}) NOT NULL,
    origin text NOT NULL DEFAULT 'import'
);

CREATE TABLE road_line (
    id      bigserial PRIMARY KEY,
    scale   integer NOT NULL CHECK (scale IN (500, 2000)),
    name    text NOT NULL DEFAULT '',
    kind    text NOT NULL DEFAULT 'branch'
            CHECK (kind IN ('arterial', 'secondary', 'branch', 'lane')),
    width_m double precision NOT NULL DEFAULT 7 CHECK (width_m > 0),
    geom    geometry(MultiLineString, {{SRID}}) NOT NULL,
    origin  text NOT NULL DEFAULT 'import'
);

CREATE TABLE water (
    id     bigserial PRIMARY KEY,
    scale  integer NOT NULL CHECK (scale IN (500, 2000)),
    name   text NOT NULL DEFAULT '',
    kind   text NOT NULL DEFAULT 'water',
    geom   geometry(MultiPolygon, {{SRID}}) NOT NULL,
    origin text NOT NULL DEFAULT 'import'
);

CREATE TABLE green (
    id     bigserial PRIMARY KEY,
    scale  integer NOT NULL CHECK (scale IN (500, 2000)),
    name   text NOT NULL DEFAULT '',
    kind   text NOT NULL DEFAULT 'green',
    geom   geometry(MultiPolygon, {{SRID}}) NOT NULL,
    origin text NOT NULL DEFAULT 'import'
);

CREATE TABLE railway (
    id     bigserial PRIMARY KEY,
    scale  integer NOT NULL CHECK (scale IN (500, 2000)),
    name   text NOT NULL DEFAULT '',
    geom   geometry(MultiLineString, {{SRID}}) NOT NULL,
    origin text NOT NULL DEFAULT 'import'
);

CREATE TABLE wall (
    id     bigserial PRIMARY KEY,
    scale  integer NOT NULL CHECK (scale IN (500, 2000)),
    kind   text NOT NULL DEFAULT 'wall' CHECK (kind IN ('wall', 'fence')),
    geom   geometry(MultiLineString, {{SRID}}) NOT NULL,
    origin text NOT NULL DEFAULT 'import'
);

CREATE TABLE annotation (
    id     bigserial PRIMARY KEY,
    scale  integer NOT NULL CHECK (scale IN (500, 2000)),
    text   text NOT NULL CHECK (text <> ''),
    kind   text NOT NULL DEFAULT 'place',
    angle  double precision NOT NULL DEFAULT 0,
    geom   geometry(Point, {{SRID}}) NOT NULL,
    origin text NOT NULL DEFAULT 'import'
);

CREATE INDEX building_geom_500_idx ON building USING gist (geom) WHERE scale = 500;
CREATE INDEX building_geom_2000_idx ON building USING gist (geom) WHERE scale = 2000;
CREATE INDEX road_surface_geom_500_idx ON road_surface USING gist (geom) WHERE scale = 500;
CREATE INDEX road_surface_geom_2000_idx ON road_surface USING gist (geom) WHERE scale = 2000;
CREATE INDEX road_line_geom_500_idx ON road_line USING gist (geom) WHERE scale = 500;
CREATE INDEX road_line_geom_2000_idx ON road_line USING gist (geom) WHERE scale = 2000;
CREATE INDEX road_line_name_idx ON road_line (name);
CREATE INDEX water_geom_idx ON water USING gist (geom);
CREATE INDEX green_geom_idx ON green USING gist (geom);
CREATE INDEX railway_geom_idx ON railway USING gist (geom);
CREATE INDEX wall_geom_idx ON wall USING gist (geom);
CREATE INDEX annotation_geom_idx ON annotation USING gist (geom);
