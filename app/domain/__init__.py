"""Domain logic in plain functions: ledger, reconcile, allocation, settlement."""
