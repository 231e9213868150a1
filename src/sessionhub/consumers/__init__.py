"""Hub-level features built on the engine: workspaces, live counts, notifications, webhooks,
the remote-access command workflow and the screen-share frame relay.

Layering: ``features`` sits beside ``hub``. A feature may import ``hub``, ``scheduler``,
``core``, ``kinds``, ``store`` and ``broker``; ``server`` (the transports) may import
``features``; nothing below (``core``, ``kinds``, ``store``, ``broker``, ``hub``) imports a
feature. Features hold the behaviour that is more than one hub call (a workflow kept in a
session's metadata, a background worker, a relay) so the routers stay thin.
"""
