"""All tables, imported together so that metadata (and Alembic) sees every one."""

from app.models.auth import ApiToken, IdempotencyRecord, OAuthState
from app.models.bills import BillEntry, BillImport
from app.models.channels import ChannelLease
from app.models.inbox import InboxItem
from app.models.jobs import Job, Resync
from app.models.orders import Order, OrderLine, Refund, RefundLine
from app.models.settlement import DeliveryAttempt, MemberShare, Settlement, SettlementLine
from app.models.shipments import Carrier, CarrierCode, Shipment, ShipmentAttempt, ShipmentLine
from app.models.stock import LotConsumption, MemberLot, Sku, StockMovement
from app.models.stores import Listing, Store, StoreSettings, SyncCursor

__all__ = [
    "ApiToken", "IdempotencyRecord", "OAuthState", "InboxItem", "Job", "Resync", "Order", "OrderLine", "Refund",
    "RefundLine", "DeliveryAttempt", "MemberShare", "Settlement", "SettlementLine", "LotConsumption",
    "MemberLot", "Sku", "StockMovement", "Listing", "Store", "StoreSettings", "SyncCursor",
    "Carrier", "CarrierCode", "Shipment", "ShipmentAttempt", "ShipmentLine",
    "BillEntry", "BillImport", "ChannelLease",
]
