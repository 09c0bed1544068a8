"""Matching a platform's courier list onto the cooperative's carriers: short code, exact name, then the name
without its trade word. The company lists are hand-made from the documented fields (operations.md 1.1-1.3)."""

from __future__ import annotations

from adapters.base import PlatformCarrier
from app.domain.carriers import BUILTIN_CARRIERS, base_name, known, match, tracking_link

CARRIERS = [known(spec.code, spec.names[0]) for spec in BUILTIN_CARRIERS]


def test_a_short_code_wins_over_names():
    rows = [PlatformCarrier("ZTO", "中通快递", "ZTO"), PlatformCarrier("SF", "顺丰速运", "SF")]
    found = match(CARRIERS, rows)
    assert (found["ZTO"].company, found["SF"].company) == ("ZTO", "SF")


def test_names_match_where_codes_differ_douyin_and_pdd_ids():
    rows = [PlatformCarrier("zhongtong", "中通快递", "zhongtong"), PlatformCarrier("shunfeng", "顺丰快递", "shunfeng"),
            PlatformCarrier("115", "中通速递", "ZTO-X"), PlatformCarrier("jtexpress", "极兔速递", "jtexpress"),
            PlatformCarrier("youzheng", "邮政EMS", "EMS-X")]
    found = match(CARRIERS, rows)
    assert found["ZTO"].company == "zhongtong"  # exact name, first best row
    assert found["SF"].company == "shunfeng"  # 顺丰快递 is one of SF's names
    assert found["JTSD"].company == "jtexpress" and found["EMS"].company == "youzheng"
    assert "YTO" not in found


def test_the_trade_word_is_dropped_only_when_nothing_better_matches():
    assert base_name("中通快递") == "中通" and base_name("顺丰速运") == "顺丰" and base_name("ZTO Express") == "zto"
    rows = [PlatformCarrier("7", "韵达", None), PlatformCarrier("8", "德邦快运", None), PlatformCarrier("9", "德邦快递", None)]
    found = match(CARRIERS, rows)
    assert found["YUNDA"].company == "7"
    assert found["DBL"].company == "9"  # 德邦快递 is a name of DBL; 德邦快运 only shares its base


def test_a_carrier_added_by_an_operator_matches_by_its_name():
    found = match([known("QINBA-POST", "秦巴乡邮")], [PlatformCarrier("901", "秦巴乡邮快递", None)])
    assert found["QINBA-POST"].company == "901"


def test_tracking_links_put_the_number_in():
    assert tracking_link("https://t.example/{number}?x=1", "ZT1") == "https://t.example/ZT1?x=1"
    assert tracking_link(None, "ZT1") is None
