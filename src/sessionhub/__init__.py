"""sessionhub: sessions of any kind, kept through their lifecycle and pushed live."""

__version__ = "0.1.0"
