"""Upstream event sources: raw input from other systems turned into hub commands."""
