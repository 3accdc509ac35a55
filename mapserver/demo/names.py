"""Chinese names for the demo district: roads, streets, communities, landmarks, buildings.

Names are drawn without repetition from pools; when a pool runs out, generated names
(syllable + suffix) keep them unique, so any district size gets distinct names.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

ARTERIALS = [
    "中关村大街",
    "学院路",
    "知春路",
    "成府路",
    "海淀大街",
    "苏州街",
    "万泉河路",
    "花园路",
    "北四环西路",
    "西三环北路",
    "清华东路",
    "双清路",
    "白颐路",
    "紫竹院路",
    "车道沟路",
    "阜成路",
    "西直门外大街",
    "北三环西路",
    "志新路",
    "学清路",
    "林萃路",
    "上地信息路",
    "西北旺路",
    "永丰路",
    "复兴路",
    "玉泉路",
    "田村路",
    "厂洼街",
    "增光路",
    "首体南路",
]
SYLLABLES = [
    "华",
    "兴",
    "安",
    "和",
    "平",
    "康",
    "宁",
    "福",
    "泰",
    "明",
    "光",
    "文",
    "德",
    "新",
    "春",
    "秀",
    "翠",
    "青",
    "松",
    "柏",
    "枫",
    "桃",
    "杏",
    "梨",
    "榆",
    "槐",
    "泉",
    "溪",
    "湖",
    "河",
    "桥",
    "园",
    "林",
    "苑",
    "庄",
    "营",
    "屯",
    "坊",
    "里",
    "院",
    "阳",
    "景",
    "瑞",
    "祥",
    "丰",
    "裕",
    "昌",
    "盛",
    "嘉",
    "惠",
    "永",
    "长",
    "太",
    "恩",
    "济",
    "育",
    "知",
    "智",
    "科",
    "学",
]
SECONDARY_SUFFIX = ["路", "街", "西路", "东路", "北路", "南路"]
LANE_SUFFIX = ["胡同", "巷", "里", "一巷", "二巷"]
STREET_SUFFIX = "街道"
COMMUNITY_SUFFIX = "社区"
COMPOUND_KINDS = ["小区", "家园", "花园", "公寓", "新村", "嘉园", "里"]
SCHOOLS = ["第一中学", "实验小学", "外国语学校", "职业学院", "第二中学", "附属小学"]
HOSPITALS = ["人民医院", "中医医院", "妇幼保健院", "社区卫生服务中心"]
MALLS = ["购物中心", "商场", "百货大楼", "科技大厦", "创业大厦", "国际中心"]
PARK_SUFFIX = ["公园", "绿地", "游园", "体育公园"]
RIVERS = ["万泉河", "小月河", "南长河", "京密引水渠", "清河"]
RAILWAYS = ["京包铁路", "京张铁路", "京通铁路"]


class NamePool:
    """Unique names: from a fixed pool first, then generated from syllables."""

    def __init__(self, rng: random.Random, pool: list[str], suffixes: list[str]):
        self.rng = rng
        self.pool = list(pool)
        rng.shuffle(self.pool)
        self.suffixes = suffixes
        self.used: set[str] = set()

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        while self.pool:
            name = self.pool.pop()
            if name not in self.used:
                self.used.add(name)
                return name
        for _ in range(10_000):
            stem = "".join(self.rng.sample(SYLLABLES, 2))
            name = stem + self.rng.choice(self.suffixes)
            if name not in self.used:
                self.used.add(name)
                return name
        raise RuntimeError("name pool exhausted")


class Names:
    """All the name pools of one demo district, seeded together."""

    def __init__(self, seed: int):
        rng = random.Random(f"names-{seed}")
        self.rng = rng
        self.arterial = NamePool(rng, ARTERIALS, ["大街", "路"])
        self.secondary = NamePool(rng, [], SECONDARY_SUFFIX)
        self.lane = NamePool(rng, [], LANE_SUFFIX)
        self.street = NamePool(rng, [], [STREET_SUFFIX])
        self.community = NamePool(rng, [], [COMMUNITY_SUFFIX])
        self.compound = NamePool(rng, [], COMPOUND_KINDS)
        self.place = NamePool(rng, [], [""])

    def landmark(self, kind: str) -> str:
        stem = next(self.place)
        suffix = {
            "school": SCHOOLS,
            "hospital": HOSPITALS,
            "mall": MALLS,
            "park": PARK_SUFFIX,
        }[kind]
        return stem + self.rng.choice(suffix)

    def river(self) -> str:
        return self.rng.choice(RIVERS)

    def railway(self) -> str:
        return self.rng.choice(RAILWAYS)
