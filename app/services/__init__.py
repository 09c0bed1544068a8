"""Flows of the service: each module loads, locks, calls adapters and writes for one flow, and
declares the jobs that run it."""
