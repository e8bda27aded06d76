"""Targeting and staged rollouts: who installs an upload, and in which order.

The manifest says who (``to``: groups) and in what order (``waves``, ``wave_wait``); the
servers' own status records are the gate. ``plan`` holds the pure decisions (wave sizes,
rendezvous ranks, the gate), ``halt`` the sealed halt record an operator writes, ``gate``
the daemon's side, ``command`` ``distsync rollout``.
"""
