"""Releases: artifacts unpacked into ``Dir/releases/<version>-<name>/`` and switched into place
through the ``Dir/current`` symlink, health-gated, reverted on failure, pruned to ``Keep``.

- ``config``: the ``[[Release]]`` tables;
- ``plan``: the pure decisions (which version, where a rollback goes, what to prune);
- ``layout``: the directory layout and its atomic steps (commit, switch, remove);
- ``unpack``: safe unpacking;
- ``state``: what the daemon remembers per release, and ``ActivationOutcome``;
- ``requests``: rollback/resume requests from the command line to the daemon;
- ``manager``: the I/O that ties them together for the daemon;
- ``report``: a release described as data (``distsync releases``).
"""
