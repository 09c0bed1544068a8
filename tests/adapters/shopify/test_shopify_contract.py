"""The basic adapter contract for Shopify: registry path, class attributes, credentials validation."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import BaseModel, ValidationError

from adapters.base import Adapter, AdapterBase, Capability, StoreContext
from adapters.registry import BUILTINS, _check, _import
from adapters.shopify.adapter import ShopifyAdapter, ShopifyCredentials


def test_registry_path_imports_the_adapter_and_passes_the_load_check():
    cls = _import(BUILTINS["shopify"])
    assert cls is ShopifyAdapter
    assert _check("shopify", cls, "test") is ShopifyAdapter


def test_class_attributes_are_declared():
    assert ShopifyAdapter.platform == "shopify"
    assert ShopifyAdapter.capabilities == frozenset({
        Capability.ORDERS_PULL, Capability.REFUNDS_PULL, Capability.STOCK_PUSH, Capability.STOCK_READ,
        Capability.WEBHOOKS, Capability.SHIPMENTS, Capability.FEES, Capability.BILLS, Capability.STOCK_COMPARE_AND_SET})
    assert isinstance(ShopifyAdapter.max_window, timedelta) and ShopifyAdapter.max_window > timedelta(0)
    assert issubclass(ShopifyAdapter.Credentials, BaseModel)
    assert issubclass(ShopifyAdapter, AdapterBase)


async def test_an_instance_satisfies_the_protocol(http):
    adapter = ShopifyAdapter(StoreContext("s", "x.myshopify.com", ShopifyCredentials(access_token="t")), http)
    assert isinstance(adapter, Adapter)


def test_credentials_default_the_api_version_and_hide_the_token():
    creds = ShopifyCredentials.model_validate({"access_token": "shpat_abc"})
    assert creds.api_version == "2026-07"
    assert "shpat_abc" not in repr(creds)


def test_credentials_may_wait_for_authorisation():
    # A store connected through OAuth has no token until its callback; its calls wait for one.
    assert ShopifyCredentials.model_validate({}).access_token is None


@pytest.mark.parametrize("data", [
    {"access_token": ""},
    {"access_token": "t", "api_version": "latest"},
    {"access_token": "t", "api_version": "2026-05"},
    {"access_token": "t", "api_version": "2025-10"},  # older than 2026-04: no changeFromQuantity, no @idempotent
    {"access_token": "t", "shop": "extra fields are refused"},
])
def test_credentials_refuse_bad_input(data):
    with pytest.raises(ValidationError):
        ShopifyCredentials.model_validate(data)
