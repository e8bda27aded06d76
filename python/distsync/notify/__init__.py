"""How servers notice new artifacts: ``Notify`` names a ``distsync.notify`` plugin."""
