"""The couriers the cooperative ships with, under its own codes, and how a platform's company list is
matched onto them (pure: no session, no I/O).

Built-in platform codes are a starting point, not a source of truth: Taobao's ``company_code`` values
and Shopify's tracking company names are widely used ones [I]; Pinduoduo ids and Douyin codes are not
built in at all, they come from each platform's own company list (``carriers.refresh``, and on demand
before an upload). An operator's ``PUT /v1/carriers`` wins over both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from adapters.base import PlatformCarrier

BUILTIN = "builtin"  # CarrierCode.source: shipped with coopsync
PLATFORM = "platform"  # read from the platform's company list
OPERATOR = "operator"  # set with PUT /v1/carriers; never overwritten by a refresh

KUAIDI100 = "https://www.kuaidi100.com/chaxun?com={com}&nu={{number}}"  # a public tracking page [I]


@dataclass(frozen=True)
class CarrierSpec:
    """A built-in carrier: its code, Chinese names (the first is its name), and codes on platforms."""

    code: str
    names: tuple[str, ...]
    platform_codes: Mapping[str, str] = field(default_factory=dict)
    tracking_url: str | None = None
    aliases: tuple[str, ...] = ()  # other short codes platforms use for it


def _spec(code: str, names: tuple[str, ...], *, taobao: str | None, shopify: str, kuaidi100: str,
          aliases: tuple[str, ...] = ()) -> CarrierSpec:
    codes = {"shopify": shopify, "woocommerce": shopify, "sandbox": code}
    if taobao:
        codes["taobao"] = taobao
    return CarrierSpec(code, names, codes, KUAIDI100.format(com=kuaidi100), aliases)


BUILTIN_CARRIERS: tuple[CarrierSpec, ...] = (
    _spec("SF", ("顺丰速运", "顺丰快递", "顺丰"), taobao="SF", shopify="SF Express", kuaidi100="shunfeng",
          aliases=("SFEXPRESS",)),
    _spec("ZTO", ("中通快递", "中通速递", "中通"), taobao="ZTO", shopify="ZTO Express", kuaidi100="zhongtong"),
    _spec("YTO", ("圆通速递", "圆通快递", "圆通"), taobao="YTO", shopify="YTO Express", kuaidi100="yuantong"),
    _spec("STO", ("申通快递", "申通"), taobao="STO", shopify="STO Express", kuaidi100="shentong"),
    _spec("YUNDA", ("韵达快递", "韵达速递", "韵达"), taobao="YUNDA", shopify="Yunda Express", kuaidi100="yunda",
          aliases=("YD",)),
    _spec("JD", ("京东快递", "京东物流", "京东"), taobao="JD", shopify="JD Logistics", kuaidi100="jd",
          aliases=("JDL",)),
    _spec("EMS", ("EMS", "邮政EMS", "中国邮政速递物流", "邮政速递"), taobao="EMS", shopify="China EMS (ePacket)",
          kuaidi100="ems"),
    _spec("POSTB", ("邮政快递包裹", "邮政包裹", "中国邮政"), taobao="POSTB", shopify="China Post",
          kuaidi100="youzhengguonei"),
    _spec("JTSD", ("极兔速递", "极兔快递", "极兔"), taobao=None, shopify="J&T Express", kuaidi100="jtexpress",
          aliases=("JT", "JTEXPRESS")),
    _spec("DBL", ("德邦快递", "德邦物流", "德邦"), taobao="DBL", shopify="Deppon", kuaidi100="debangkuaidi",
          aliases=("DBKD", "DEPPON")),
)
BUILTIN_BY_CODE = {spec.code: spec for spec in BUILTIN_CARRIERS}

_SUFFIXES = ("快递", "速递", "速运", "物流", "快运", "express", "logistics", "(ems)")
_NOISE = re.compile(r"[\s·.\-_()（）]+")


def normalise(name: str | None) -> str:
    return _NOISE.sub("", (name or "").strip().lower())


def base_name(name: str | None) -> str:
    """A company name without its trade word: 中通快递 -> 中通, 顺丰速运 -> 顺丰."""
    text = normalise(name)
    changed = True
    while changed and text:
        changed = False
        for suffix in _SUFFIXES:
            if text.endswith(suffix) and len(text) > len(suffix):
                text, changed = text[: -len(suffix)], True
    return text


@dataclass(frozen=True)
class Known:
    """A carrier as the matcher sees it: its code and every name and short code it goes by."""

    code: str
    names: tuple[str, ...]
    aliases: tuple[str, ...] = ()


def known(code: str, name: str) -> Known:
    spec = BUILTIN_BY_CODE.get(code)
    if spec is None:
        return Known(code, (name,))
    return Known(code, tuple(dict.fromkeys((name, *spec.names))), spec.aliases)


def _score(carrier: Known, row: PlatformCarrier) -> int:
    codes = {carrier.code.upper(), *(a.upper() for a in carrier.aliases)}
    if row.code and row.code.strip().upper() in codes:
        return 3
    names = {normalise(n) for n in carrier.names}
    if normalise(row.name) in names:
        return 2
    bases = {base_name(n) for n in carrier.names} - {""}
    return 1 if base_name(row.name) in bases else 0


def match(carriers: Iterable[Known], rows: Sequence[PlatformCarrier]) -> dict[str, PlatformCarrier]:
    """The platform company each carrier is, by short code, then exact name, then name without its trade
    word; the first best row wins. Carriers nothing matches are left out."""
    found: dict[str, PlatformCarrier] = {}
    for carrier in carriers:
        best, best_score = None, 0
        for row in rows:
            score = _score(carrier, row)
            if score > best_score:
                best, best_score = row, score
        if best is not None:
            found[carrier.code] = best
    return found


def tracking_link(template: str | None, number: str) -> str | None:
    return template.replace("{number}", number) if template else None
