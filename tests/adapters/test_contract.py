"""The same checks over every registered adapter: declarations, credentials, webhooks, isolation."""

from __future__ import annotations

import ast
import inspect
from datetime import timedelta
from importlib.metadata import EntryPoint
from pathlib import Path

import httpx
import pytest
from pydantic import BaseModel, SecretStr

from adapters import registry
from adapters.base import AdapterBase, Capability, StoreContext, WebhookIdentity
from adapters.errors import AdapterError, PermanentError, SignatureError

ADAPTERS = registry.load_adapters()
ROOT = Path(__file__).resolve().parents[2]


def sample_credentials(cls) -> BaseModel:
    values = {}
    for name, field in cls.Credentials.model_fields.items():
        if field.is_required():
            values[name] = "x-" + name
    return cls.Credentials.model_validate(values)


def make(cls):
    store = StoreContext(store_id="1", external_shop_id="shop-1", credentials=sample_credentials(cls),
                         settings={"base_url": "https://platform.test"})
    return cls(store, httpx.AsyncClient())


def test_every_builtin_platform_is_registered():
    assert set(ADAPTERS) >= {"sandbox", "shopify", "woocommerce", "pinduoduo", "taobao", "douyin"}


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_declarations(name):
    cls = ADAPTERS[name]
    assert cls.platform == name
    assert cls.capabilities and set(cls.capabilities) <= set(Capability)
    assert isinstance(cls.max_window, timedelta) and cls.max_window > timedelta(0)
    assert issubclass(cls.Credentials, BaseModel)
    for method in ("fetch_order", "fetch_orders", "fetch_refund", "fetch_refunds", "push_stock", "fetch_stock"):
        assert inspect.iscoroutinefunction(getattr(cls, method)), f"{name}.{method} must be async"
    assert cls.__doc__ or cls.__module__


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_credentials_refuse_unknown_fields_and_keep_secrets_out_of_repr(name):
    cls = ADAPTERS[name]
    creds = sample_credentials(cls)
    with pytest.raises(Exception):
        cls.Credentials.model_validate({**creds.model_dump(), "surprise": "field"})
    for field_name, value in creds:
        if isinstance(value, SecretStr):
            assert value.get_secret_value() not in repr(creds)


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_webhooks_refuse_a_forged_delivery(name):
    cls = ADAPTERS[name]
    adapter = make(cls)
    body = b'{"id": 1}'
    headers = {"Content-Type": "application/json"}
    if Capability.WEBHOOKS in cls.capabilities:
        identity = adapter.webhook_identity(headers, body)
        assert isinstance(identity, WebhookIdentity)
        with pytest.raises(SignatureError):
            adapter.verify_webhook({**headers, "X-Signature": "forged"}, body, ["the-secret"])
        assert isinstance(adapter.webhook_ack("accepted"), dict)
    else:
        with pytest.raises(PermanentError):
            adapter.verify_webhook(headers, body, ["the-secret"])


@pytest.mark.parametrize("name", sorted(ADAPTERS))
async def test_capabilities_not_declared_are_refused_cleanly(name):
    cls = ADAPTERS[name]
    adapter = make(cls)
    if Capability.STOCK_READ not in cls.capabilities:
        with pytest.raises(AdapterError):
            await adapter.fetch_stock([])


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_adapter_package_never_imports_app(name):
    package = ROOT / "adapters" / name
    for path in package.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.split(".")[0] == "app", f"{path} imports {node.module}"
            if isinstance(node, ast.Import):
                assert all(a.name.split(".")[0] != "app" for a in node.names), f"{path} imports app"
        assert ast.get_docstring(tree), f"{path} has no module docstring"


def test_a_broken_plugin_stops_loading_with_a_message_naming_it(monkeypatch):
    broken = EntryPoint(name="kuaishou", value="coopsync_kuaishou.nowhere:Adapter", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [broken])
    with pytest.raises(registry.AdapterLoadError, match="kuaishou"):
        registry.load_adapters()


def test_a_plugin_adapter_is_registered(monkeypatch):
    import sys
    import types

    module = types.ModuleType("coopsync_demo_plugin")

    class DemoAdapter(AdapterBase):
        """A third-party adapter."""

        platform = "demo"
        capabilities = frozenset({Capability.ORDERS_PULL})

    module.DemoAdapter = DemoAdapter
    monkeypatch.setitem(sys.modules, "coopsync_demo_plugin", module)
    ep = EntryPoint(name="demo", value="coopsync_demo_plugin:DemoAdapter", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [ep])
    assert registry.load_adapters()["demo"] is DemoAdapter


def test_a_plugin_that_lies_about_its_platform_is_refused(monkeypatch):
    import sys
    import types

    module = types.ModuleType("coopsync_liar_plugin")

    class Liar(AdapterBase):
        platform = "shopify"
        capabilities = frozenset({Capability.ORDERS_PULL})

    module.Liar = Liar
    monkeypatch.setitem(sys.modules, "coopsync_liar_plugin", module)
    ep = EntryPoint(name="liar", value="coopsync_liar_plugin:Liar", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [ep])
    with pytest.raises(registry.AdapterLoadError, match="liar"):
        registry.load_adapters()


def test_service_start_up_fails_loudly_on_a_broken_plugin(monkeypatch):
    from app.main import create_app
    from app.services import platforms as runtime

    broken = EntryPoint(name="broken", value="no_such_module:Adapter", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [broken])
    runtime.registry.cache_clear()
    try:
        with pytest.raises(registry.AdapterLoadError, match="broken"):
            create_app(configure_logs=False)
    finally:
        monkeypatch.undo()
        runtime.registry.cache_clear()
