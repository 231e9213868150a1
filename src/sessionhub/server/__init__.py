"""Thin transports: parse -> hub call -> serialize. No business logic lives here."""
