-- The standard component and event classes in English, for an install whose locale is en.
-- The class tables keep the standard's Chinese texts (the zh-CN locale's); class_label holds a
-- class's texts in another locale, and a NULL there means "the class table's text". A text is
-- given its shipped English only where the class row still has the shipped Chinese: a name an
-- administrator edited stays the name in every locale until it is edited in that locale
-- (mapserver.maintenance.classes writes an en install's edits here). Codes never change.
-- Responsible departments are organisation names, install data: not translated.
CREATE TABLE class_label (
    kind              text NOT NULL CHECK (kind IN ('event', 'component')),
    major             char(2) NOT NULL,
    minor             varchar(3) NOT NULL,
    locale            text NOT NULL CHECK (locale <> 'zh-CN'),
    major_name        text,
    name              text,
    filing_condition  text,
    closing_condition text,
    PRIMARY KEY (kind, major, minor, locale)
);

-- class_text(locale): every class with its texts in `locale` (the class tables' own for zh-CN).
CREATE FUNCTION class_text(p_locale text)
RETURNS TABLE (kind text, major char(2), minor varchar(3), major_name text, name text,
               filing_condition text, closing_condition text)
    LANGUAGE sql STABLE
AS $$
    SELECT b.kind, b.major, b.minor, coalesce(l.major_name, b.major_name),
           coalesce(l.name, b.name), coalesce(l.filing_condition, b.filing_condition),
           coalesce(l.closing_condition, b.closing_condition)
    FROM (SELECT 'event'::text AS kind, major, minor, major_name, name, filing_condition,
                 closing_condition
          FROM event_class
          UNION ALL
          SELECT 'component', major, minor, major_name, name, filing_condition, ''
          FROM component_class) b
    LEFT JOIN class_label l
        ON (l.kind, l.major, l.minor, l.locale) = (b.kind, b.major, b.minor, p_locale)
$$;

-- The shipped filing and closing standards follow fixed patterns around the class's name.
WITH shipped_en (kind, major, minor, zh_major, en_major, zh, en) AS (VALUES
    ('component', '01', '01', '公共设施', 'Public facilities', '上水井盖', 'Water supply manhole cover'),
    ('component', '01', '02', '公共设施', 'Public facilities', '污水井盖', 'Sewage manhole cover'),
    ('component', '01', '03', '公共设施', 'Public facilities', '雨水井盖', 'Storm drain manhole cover'),
    ('component', '01', '04', '公共设施', 'Public facilities', '雨水箅子', 'Storm drain grate'),
    ('component', '01', '05', '公共设施', 'Public facilities', '电力井盖', 'Power manhole cover'),
    ('component', '01', '06', '公共设施', 'Public facilities', '路灯井盖', 'Street lighting manhole cover'),
    ('component', '01', '07', '公共设施', 'Public facilities', '电信井盖', 'Telecom manhole cover'),
    ('component', '01', '08', '公共设施', 'Public facilities', '有线电视井盖', 'Cable TV manhole cover'),
    ('component', '01', '09', '公共设施', 'Public facilities', '网络井盖', 'Data network manhole cover'),
    ('component', '01', '10', '公共设施', 'Public facilities', '热力井盖', 'District heating manhole cover'),
    ('component', '01', '11', '公共设施', 'Public facilities', '燃气井盖', 'Gas manhole cover'),
    ('component', '01', '12', '公共设施', 'Public facilities', '公安井盖', 'Police manhole cover'),
    ('component', '01', '13', '公共设施', 'Public facilities', '消防设施', 'Fire-fighting facility'),
    ('component', '01', '14', '公共设施', 'Public facilities', '不明井盖', 'Unidentified manhole cover'),
    ('component', '01', '15', '公共设施', 'Public facilities', '电信交接箱', 'Telecom cross-connect cabinet'),
    ('component', '01', '16', '公共设施', 'Public facilities', '电力设施', 'Power facility'),
    ('component', '01', '17', '公共设施', 'Public facilities', '电杆', 'Utility pole'),
    ('component', '01', '18', '公共设施', 'Public facilities', '路灯', 'Street lamp'),
    ('component', '01', '21', '公共设施', 'Public facilities', '报刊亭', 'Newsstand'),
    ('component', '01', '22', '公共设施', 'Public facilities', '电话亭', 'Telephone booth'),
    ('component', '01', '23', '公共设施', 'Public facilities', '邮筒', 'Post box'),
    ('component', '01', '26', '公共设施', 'Public facilities', '健身设施', 'Fitness equipment'),
    ('component', '02', '01', '道路交通', 'Road traffic', '停车场', 'Car park'),
    ('component', '02', '02', '道路交通', 'Road traffic', '停车咪表', 'Parking meter'),
    ('component', '02', '03', '道路交通', 'Road traffic', '公交站亭', 'Bus shelter'),
    ('component', '02', '05', '道路交通', 'Road traffic', '过街天桥', 'Pedestrian overpass'),
    ('component', '02', '06', '道路交通', 'Road traffic', '地下通道', 'Pedestrian underpass'),
    ('component', '02', '08', '道路交通', 'Road traffic', '跨河桥', 'River bridge'),
    ('component', '02', '09', '道路交通', 'Road traffic', '交通标志牌', 'Traffic sign'),
    ('component', '02', '11', '道路交通', 'Road traffic', '交通护栏', 'Traffic guard rail'),
    ('component', '02', '13', '道路交通', 'Road traffic', '路名牌', 'Street name sign'),
    ('component', '02', '14', '道路交通', 'Road traffic', '交通信号灯', 'Traffic signal'),
    ('component', '03', '01', '市容环境', 'City appearance', '公共厕所', 'Public toilet'),
    ('component', '03', '04', '市容环境', 'City appearance', '垃圾间', 'Refuse room'),
    ('component', '03', '05', '市容环境', 'City appearance', '垃圾箱', 'Litter bin'),
    ('component', '03', '06', '市容环境', 'City appearance', '灯箱霓虹灯', 'Light box or neon sign'),
    ('component', '03', '07', '市容环境', 'City appearance', '广告牌匾', 'Billboard or shop sign'),
    ('component', '04', '01', '园林绿化', 'Landscaping', '古树名木', 'Old or notable tree'),
    ('component', '04', '02', '园林绿化', 'Landscaping', '行道树', 'Street tree'),
    ('component', '04', '04', '园林绿化', 'Landscaping', '花架花钵', 'Flower stand or planter'),
    ('component', '04', '05', '园林绿化', 'Landscaping', '绿地', 'Green space'),
    ('component', '04', '06', '园林绿化', 'Landscaping', '雕塑', 'Sculpture'),
    ('component', '04', '07', '园林绿化', 'Landscaping', '街头座椅', 'Street bench'),
    ('component', '05', '01', '房屋土地', 'Housing and land', '宣传栏', 'Notice board'),
    ('component', '05', '02', '房屋土地', 'Housing and land', '人防工事', 'Civil air-defence works'),
    ('component', '05', '03', '房屋土地', 'Housing and land', '公房地下室', 'Public housing basement'),
    ('component', '06', '01', '其他设施', 'Other facilities', '其他设施', 'Other facility'),
    ('event', '01', '01', '市容环境', 'City appearance', '私搭乱建/新增建筑', 'Illegal structure or new building'),
    ('event', '01', '02', '市容环境', 'City appearance', '暴露垃圾', 'Exposed garbage'),
    ('event', '01', '03', '市容环境', 'City appearance', '积存垃圾渣土', 'Accumulated garbage or muck'),
    ('event', '01', '04', '市容环境', 'City appearance', '道路不洁', 'Dirty road'),
    ('event', '01', '05', '市容环境', 'City appearance', '水域不洁', 'Dirty water body'),
    ('event', '01', '06', '市容环境', 'City appearance', '绿地脏乱', 'Littered green space'),
    ('event', '01', '07', '市容环境', 'City appearance', '废弃车辆', 'Abandoned vehicle'),
    ('event', '01', '08', '市容环境', 'City appearance', '废弃家具设备', 'Discarded furniture or equipment'),
    ('event', '01', '09', '市容环境', 'City appearance', '非装饰性树挂', 'Objects hung on trees'),
    ('event', '02', '01', '宣传广告', 'Advertising', '非法小广告', 'Illegal flyers'),
    ('event', '02', '02', '宣传广告', 'Advertising', '违章张贴悬挂广告牌匾', 'Illegally posted or hung signs'),
    ('event', '02', '03', '宣传广告', 'Advertising', '占道广告牌', 'Billboard on the roadway'),
    ('event', '02', '04', '宣传广告', 'Advertising', '街头散发小广告', 'Flyers handed out in the street'),
    ('event', '03', '01', '施工管理', 'Construction', '施工扰民', 'Construction nuisance'),
    ('event', '03', '02', '施工管理', 'Construction', '工地扬尘', 'Construction site dust'),
    ('event', '03', '03', '施工管理', 'Construction', '无证消纳渣土', 'Unlicensed muck dumping'),
    ('event', '03', '04', '施工管理', 'Construction', '道路遗撒', 'Spillage on the road'),
    ('event', '03', '05', '施工管理', 'Construction', '施工废弃料', 'Construction waste'),
    ('event', '03', '06', '施工管理', 'Construction', '道路破损', 'Broken road'),
    ('event', '03', '07', '施工管理', 'Construction', '施工工地未围挡', 'Unfenced construction site'),
    ('event', '04', '01', '突发事件', 'Emergencies', '路面塌陷', 'Road collapse'),
    ('event', '04', '02', '突发事件', 'Emergencies', '自来水管破裂', 'Burst water main'),
    ('event', '04', '03', '突发事件', 'Emergencies', '燃气管道破裂', 'Burst gas pipe'),
    ('event', '04', '04', '突发事件', 'Emergencies', '下水道堵塞', 'Blocked sewer'),
    ('event', '04', '11', '突发事件', 'Emergencies', '火灾', 'Fire'),
    ('event', '05', '01', '街面秩序', 'Street order', '无照经营游商', 'Unlicensed street vendor'),
    ('event', '05', '02', '街面秩序', 'Street order', '流浪乞讨', 'Vagrancy and begging'),
    ('event', '05', '03', '街面秩序', 'Street order', '占道废品收购', 'Scrap buying on the roadway'),
    ('event', '05', '04', '街面秩序', 'Street order', '店外经营', 'Trading outside the shop'),
    ('event', '05', '05', '街面秩序', 'Street order', '机动车乱停放', 'Illegally parked car'),
    ('event', '05', '06', '街面秩序', 'Street order', '非机动车乱停放', 'Illegally parked bicycle'),
    ('event', '05', '07', '街面秩序', 'Street order', '乱堆物堆料', 'Goods or materials piled up'),
    ('event', '05', '09', '街面秩序', 'Street order', '黑车拉客', 'Unlicensed taxi touting'),
    ('event', '05', '10', '街面秩序', 'Street order', '露天烧烤', 'Open-air barbecue'),
    ('event', '06', '01', '其他事件', 'Other events', '其他事件', 'Other event'))
INSERT INTO class_label (kind, major, minor, locale, major_name, name, filing_condition,
                         closing_condition)
SELECT s.kind, s.major, s.minor, 'en',
       CASE WHEN b.major_name = s.zh_major THEN s.en_major END,
       CASE WHEN b.name = s.zh THEN s.en END,
       CASE WHEN b.filing_condition = s.zh || '丢失、破损或移位'
                THEN s.en || ' missing, damaged or displaced'
            WHEN b.filing_condition = s.zh || '破损、丢失或被占用'
                THEN s.en || ' damaged, missing or occupied'
            WHEN b.filing_condition = '发现' || s.zh || '即立案'
                THEN 'Filed as soon as found: ' || lower(left(s.en, 1)) || substr(s.en, 2)
       END,
       CASE WHEN b.closing_condition = s.zh || '已消除' THEN s.en || ' cleared' END
FROM shipped_en s
JOIN (SELECT 'event'::text AS kind, major, minor, major_name, name, filing_condition,
             closing_condition
      FROM event_class
      UNION ALL
      SELECT 'component', major, minor, major_name, name, filing_condition, ''
      FROM component_class) b
    ON (b.kind, b.major, b.minor) = (s.kind, s.major, s.minor);

-- The map reader names components' classes too (identify, in the secure zone's renderer).
GRANT SELECT ON class_label, event_class TO citygrid_map;
GRANT SELECT, INSERT, UPDATE ON class_label TO citygrid_app;
