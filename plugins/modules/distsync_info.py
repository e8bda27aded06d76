#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: distsync contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: distsync_info
short_description: List the artifacts and versions in a distsync store
version_added: "0.1.0"
description:
  - Reads and verifies the encrypted manifests of the store named by O(config) and returns
    every artifact version, newest first, or only the versions of O(name).
  - Also reads the servers' sealed status records and returns, per server, which version of
    each name it has, failures, and when it was last heard from (C(distsync status --json)).
options:
  name:
    description: Only return versions of this artifact name.
    type: str
extends_documentation_fragment:
  - distsync.core.engine
  - distsync.core.engine.config
attributes:
  check_mode:
    description: Reads only; runs the same in check mode.
    support: full
  diff_mode:
    description: Reads only; there is nothing to diff.
    support: none
  idempotent:
    description: Reads only.
    support: full
author:
  - distsync maintainers (@distsync)
"""

EXAMPLES = r"""
- name: List what the fleet can install
  distsync.core.distsync_info:
    config: ~/.distsync
  register: store

- name: Versions of one artifact
  distsync.core.distsync_info:
    name: app.tar.gz
  register: app

- name: The newest version of app.tar.gz
  ansible.builtin.debug:
    msg: "{{ app.versions[0].version }}"
  when: app.versions | length > 0

- name: Servers that do not have it yet
  ansible.builtin.debug:
    msg: "{{ app.servers | rejectattr('artifacts.' ~ 'app.tar.gz', 'defined') | map(attribute='name') }}"
"""

RETURN = r"""
versions:
  description: Artifact versions, newest first.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Artifact name.
      type: str
      returned: always
    version:
      description: Version id (the upload log's sequence number).
      type: str
      returned: always
    size:
      description: Plaintext size in bytes.
      type: int
      returned: always
    sha256:
      description: Plaintext SHA-256, hex.
      type: str
      returned: always
    uploaded_at:
      description: Upload time by the uploader's clock (seconds since the epoch; informative only).
      type: float
      returned: always
    uploader:
      description: The uploader's name (its host name unless configured).
      type: str
      returned: always
    mode:
      description: File mode the servers install it with, octal.
      type: str
      returned: always
    pruned:
      description:
        - Whether the version's content was deleted from the store (C(distsync prune)); its
          log entry stays. Always false for an identity that may not list the contents.
      type: bool
      returned: always
      version_added: "0.2.0"
names:
  description: The distinct artifact names, sorted.
  returned: always
  type: list
  elements: str
servers:
  description:
    - Each server's status record, sorted by name, as C(distsync status --json) gives it
      (docs/status.md). Empty when no server has reported yet; when the records cannot be
      read (an uploader identity from before status records), empty with a warning.
    - With O(name), each server's C(artifacts) holds only that name.
  returned: always
  type: list
  elements: dict
  version_added: "0.2.0"
  contains:
    name:
      description: The server's C(NodeName).
      type: str
      returned: always
    label:
      description: The name, or C(name#<start of node id>) when two servers share a name.
      type: str
      returned: always
    node:
      description: The server's random node id.
      type: str
      returned: always
    groups:
      description: The server's C(Groups).
      type: list
      elements: str
      returned: always
    state:
      description: C(live), C(stale) (silent for three of its status intervals) or C(stopped).
      type: str
      returned: always
    last_seen:
      description: When it last wrote its record (its clock, seconds since the epoch).
      type: float
      returned: always
    artifacts:
      description:
        - Per artifact name - C(version) installed, C(sha256), C(installed_at), C(newest)
          version seen, C(hook) (C(ok), C(failed) or null), C(pinned), C(failure) (version,
          reason, at, final) and C(marks) (C(failed), C(behind), C(pinned), C(stale)).
      type: dict
      returned: always
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.distsync.core.plugins.module_utils._engine import (
    require_engine,
    run_engine,
)


def _read(module):
    from distsync.catalog import Catalog
    from distsync.config import load_config
    from distsync.errors import StorageError
    from distsync.status import read_fleet

    name = module.params["name"]
    cfg = load_config(module.params["config"])
    catalog = Catalog.open(cfg)
    from distsync.retention import present_objects

    found = [v for v in catalog.versions() if name in (None, v.manifest.name)]
    present = present_objects(catalog) if found else None
    versions = [
        dict(v.facts(), pruned=present is not None and v.manifest.object_key not in present)
        for v in found
    ]
    try:
        servers = read_fleet(cfg, catalog.store).to_json(name)["servers"]
    except StorageError as exc:
        module.warn("cannot read the servers' status records: %s" % exc)
        servers = []
    return versions, servers


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str"),
            config=dict(type="path", default="~/.distsync"),
        ),
        supports_check_mode=True,
    )
    require_engine(module)
    versions, servers = run_engine(module, lambda: _read(module))
    module.exit_json(
        changed=False,
        versions=versions,
        names=sorted({v["name"] for v in versions}),
        servers=servers,
    )


if __name__ == "__main__":
    main()
