"""Sans-I/O core: the session model, lifecycle machine, events and topics.

Nothing in this package performs I/O or reads the clock: time is always an argument.
It imports no asyncio, SQLAlchemy or Starlette (a test keeps this true).
"""
