"""Durable storage of sessions and their events (the event table is the outbox)."""

from .base import Page, SessionQuery, Store
from .sql import SqlStore, open_store

__all__ = ["Page", "SessionQuery", "SqlStore", "Store", "open_store"]
