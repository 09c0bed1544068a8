"""The basic adapter contract for WooCommerce: registry path, class attributes, credentials validation."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import BaseModel, ValidationError

from adapters.base import Adapter, AdapterBase, Capability, StoreContext
from adapters.registry import BUILTINS, _check, _import
from adapters.woocommerce.adapter import WooCommerceAdapter, WooCommerceCredentials


def test_registry_path_imports_the_adapter_and_passes_the_load_check():
    cls = _import(BUILTINS["woocommerce"])
    assert cls is WooCommerceAdapter
    assert _check("woocommerce", cls, "test") is WooCommerceAdapter


def test_class_attributes_are_declared():
    assert WooCommerceAdapter.platform == "woocommerce"
    assert WooCommerceAdapter.capabilities == frozenset({
        Capability.ORDERS_PULL, Capability.REFUNDS_PULL, Capability.STOCK_PUSH, Capability.STOCK_READ,
        Capability.WEBHOOKS, Capability.SHIPMENTS})
    assert isinstance(WooCommerceAdapter.max_window, timedelta) and WooCommerceAdapter.max_window > timedelta(0)
    assert issubclass(WooCommerceAdapter.Credentials, BaseModel)
    assert issubclass(WooCommerceAdapter, AdapterBase)


async def test_an_instance_satisfies_the_protocol(http):
    creds = WooCommerceCredentials(consumer_key="ck_x", consumer_secret="cs_y")
    assert isinstance(WooCommerceAdapter(StoreContext("s", None, creds), http), Adapter)


def test_credentials_hide_the_secret():
    creds = WooCommerceCredentials.model_validate({"consumer_key": "ck_x", "consumer_secret": "cs_secret"})
    assert "cs_secret" not in repr(creds)


@pytest.mark.parametrize("data", [
    {},
    {"consumer_key": "ck_x"},
    {"consumer_key": "", "consumer_secret": "cs_y"},
    {"consumer_key": "ck_x", "consumer_secret": "cs_y", "base_url": "belongs in settings"},
])
def test_credentials_refuse_bad_input(data):
    with pytest.raises(ValidationError):
        WooCommerceCredentials.model_validate(data)
