"""The NINA Advanced API connector (seed 000): rig events -> ``imaging`` sessions.

``NinaService`` (service.py) is the entry point; ``normalize`` and ``state`` are the pure
rules; ``client`` talks to the rig; ``messages`` builds the ``/ws/unified`` messages;
``simulator`` is a rig on loopback for tests and demos.
"""

from .config import NinaConfig, RigConfig
from .service import NinaService

__all__ = ["NinaConfig", "NinaService", "RigConfig"]
