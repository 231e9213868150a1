"""The parts of ``bench/fanout.py``, split by concept (the entry point stays ``fanout.py``).

* ``workload``: what every server is measured on (channel, message size, token secret, the
  servers' names, the windows);
* ``machine``: CPU pinning, and what else ran on the machine during a phase;
* ``peers``: the peer servers' code (Node ``ws``, uWebSockets.js, websockets, picows);
* ``servers``: how each server is started and watched;
* ``loadgen``: ``bench/loadgen.c`` compiled, and one load-generator process driven;
* ``runs``: the plan, the rounds and their results;
* ``report``: the tables and the summary;
* ``check``: ``--check``, the load generator tested against its trivial C server.

``python bench/fanout.py`` puts ``bench/`` first on ``sys.path``, so these import as
``fanout_parts.*``; ``bench/cluster.py`` reuses them the same way.
"""
