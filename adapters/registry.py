"""Built-in adapters plus the ``coopsync.adapters`` entry-point group; a broken adapter fails loudly."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from adapters.base import Adapter, Capability

ENTRY_POINT_GROUP = "coopsync.adapters"

BUILTINS: dict[str, str] = {
    "sandbox": "adapters.sandbox.adapter:SandboxAdapter",
    "shopify": "adapters.shopify.adapter:ShopifyAdapter",
    "woocommerce": "adapters.woocommerce.adapter:WooCommerceAdapter",
    "pinduoduo": "adapters.pinduoduo.adapter:PinduoduoAdapter",
    "taobao": "adapters.taobao.adapter:TaobaoAdapter",
    "douyin": "adapters.douyin.adapter:DouyinAdapter",
}


class AdapterLoadError(RuntimeError):
    """An adapter could not be loaded. Resolution: fix or uninstall the package that provides it."""


def _import(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr)


def _check(name: str, cls: Any, origin: str) -> type:
    missing = [a for a in ("platform", "capabilities", "max_window", "Credentials") if not hasattr(cls, a)]
    if missing:
        raise AdapterLoadError(f"adapter {name!r} from {origin} lacks {', '.join(missing)}")
    if cls.platform != name:
        raise AdapterLoadError(f"adapter registered as {name!r} from {origin} says platform={cls.platform!r}")
    unknown = {str(c) for c in cls.capabilities} - {c.value for c in Capability}
    if unknown:
        raise AdapterLoadError(f"adapter {name!r} from {origin} declares unknown capabilities {sorted(unknown)}")
    for method in ("verify_webhook", "webhook_identity", "parse_webhook", "fetch_order", "fetch_orders",
                   "fetch_refunds", "push_stock"):
        if not callable(getattr(cls, method, None)):
            raise AdapterLoadError(f"adapter {name!r} from {origin} has no {method}()")
    return cls


def load_adapters(include_entry_points: bool = True) -> dict[str, type[Adapter]]:
    """Every adapter by platform name. Raises ``AdapterLoadError`` naming the broken one."""
    found: dict[str, type[Adapter]] = {}
    for name, target in BUILTINS.items():
        try:
            found[name] = _check(name, _import(target), f"built-in {target}")
        except AdapterLoadError:
            raise
        except Exception as exc:  # an import error in a built-in is a bug we want to see at start-up
            raise AdapterLoadError(f"built-in adapter {name!r} ({target}) failed to load: {exc!r}") from exc
    if include_entry_points:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                cls = ep.load()
            except Exception as exc:
                raise AdapterLoadError(
                    f"adapter plug-in {ep.name!r} ({ep.value}) failed to load: {exc!r}"
                ) from exc
            if ep.name in found and found[ep.name] is not cls:
                raise AdapterLoadError(f"adapter plug-in {ep.name!r} ({ep.value}) clashes with a built-in")
            found[ep.name] = _check(ep.name, cls, f"entry point {ep.value}")
    return found
