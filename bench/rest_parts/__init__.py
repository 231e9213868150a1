"""The parts of ``bench/rest.py``, split by concept (the entry point stays ``rest.py``).

* ``apps``: the peers' apps: the bare-UPDATE peer and the FastAPI ceiling;
* ``servers``: sessionhub, the peer and the ceiling as subprocesses, and the PostgreSQL
  database the bench may empty;
* ``load``: the Python load generators (processes with a keep-alive HTTP/1.1 client) and a
  backend measured with them;
* ``wrk``: Debian's ``wrk`` driven with a generated Lua script, pinned;
* ``report``: the wrk table and the Python load generators' table.

``python bench/rest.py`` puts ``bench/`` first on ``sys.path``, so these import as
``rest_parts.*`` (in the load generators' spawned processes too); ``bench/cluster.py``
reuses ``rest_parts.load`` the same way.
"""
