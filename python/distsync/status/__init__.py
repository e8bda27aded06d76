"""Fleet status: each server's sealed status record (``record``), reading and writing them
(``board``), the pure view of the fleet they add up to (``fleet``), the daemon's reporter
(``reporter``) and ``upload --wait`` (``wait``)."""

from __future__ import annotations

from distsync.status.board import StatusBoard, read_fleet
from distsync.status.fleet import FleetView, Verdict
from distsync.status.record import ServerStatus
from distsync.status.wait import wait_for_upload

__all__ = ["FleetView", "ServerStatus", "StatusBoard", "Verdict", "read_fleet", "wait_for_upload"]
