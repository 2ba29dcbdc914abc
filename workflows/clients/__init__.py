"""Clients of each capability's workflows: the code that starts, signals and updates them,
shared by the API and the worker (like samples-python's starters), typed against the
workflow classes."""
