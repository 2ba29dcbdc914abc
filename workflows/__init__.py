"""Relay's workflows: one per module, deterministic, no I/O, no settings, no clocks."""
