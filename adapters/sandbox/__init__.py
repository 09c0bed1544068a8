"""The sandbox marketplace: an in-process shop with its own stock, orders and refunds, and its adapter."""
