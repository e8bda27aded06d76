# -*- coding: utf-8 -*-
# Copyright: distsync contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # The engine requirement, shared by every module.
    DOCUMENTATION = r"""
options: {}
requirements:
  - python >= 3.9
  - distsync >= 0.1.0 (the engine in this collection's C(python/) directory, e.g.
    C(pip install ~/.ansible/collections/ansible_collections/distsync/core/python))
notes:
  - The engine runs on the host that executes the module. For CI uploads that is usually the
    controller, with C(delegate_to=localhost) or a play on C(localhost).
"""

    # The configuration file option of modules that act on an existing setup.
    CONFIG = r"""
options:
  config:
    description:
      - Path to a distsync configuration file, as written by C(distsync setup) or
        M(distsync.core.distsync_setup), for any store (C(Local), C(S3), C(Swift) with its
        C([SwiftCreds]) table).
      - It holds the fleet's shared secret; keep it mode C(0600).
    type: path
    default: ~/.distsync
"""
