"""Who is acting: a user, a service (API key) or the system itself."""

from __future__ import annotations

from dataclasses import dataclass, field

ADMIN = "admin"
OWNER = "owner"
SYSTEM = "system"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. ``roles`` come from the token; ``system`` is the server itself."""

    sub: str
    roles: frozenset[str] = field(default_factory=frozenset)

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.roles or SYSTEM in self.roles

    @property
    def is_system(self) -> bool:
        return SYSTEM in self.roles

    def roles_on(self, owner: str) -> frozenset[str]:
        """Roles this principal holds on a session owned by ``owner``."""
        roles = set(self.roles)
        if self.sub == owner:
            roles.add(OWNER)
        return frozenset(roles)

    def may_read(self, owner: str) -> bool:
        return self.is_admin or self.sub == owner


SYSTEM_PRINCIPAL = Principal("system", frozenset({SYSTEM}))
