"""distsync: move build artifacts from CI to a fleet, encrypted end to end."""

__version__ = "0.1.0"
