#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: distsync contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: distsync_upload
short_description: Encrypt and upload a build artifact for a distsync fleet
version_added: "0.1.0"
description:
  - Encrypts O(src) end to end and uploads it to the store named by O(config), then announces
    it, so that every server running C(distsync daemon) installs it.
  - The upload is signed with the C(SigningKey) of O(config), so that servers whose
    C(TrustedSigners) hold its public key install it. A configuration that trusts signers but
    has no signing key (a server's configuration) is refused before anything is written.
  - Idempotent by content - when the newest version of O(name) already has the same plaintext
    SHA-256 (read from its authenticated manifest, never from an ETag or MD5; with signing on,
    only from a manifest signed by a trusted key), nothing is uploaded and the module reports
    C(changed=false).
options:
  src:
    description: The file to upload.
    type: path
    required: true
  name:
    description:
      - The artifact name the servers install it under (a plain file name).
      - Defaults to the base name of O(src).
    type: str
  force:
    description: Upload a new version even when the content is unchanged.
    type: bool
    default: false
extends_documentation_fragment:
  - distsync.core.engine
  - distsync.core.engine.config
attributes:
  check_mode:
    description: Reports whether an upload would happen; uploads nothing.
    support: full
  diff_mode:
    description: Shows the newest version before and the one uploaded after (version, size, SHA-256).
    support: full
  idempotent:
    description: By the plaintext SHA-256 of the newest version of O(name).
    support: full
author:
  - distsync maintainers (@distsync)
"""

EXAMPLES = r"""
- name: Publish the release tarball to the fleet
  distsync.core.distsync_upload:
    src: dist/app.tar.gz
    config: ~/.distsync

- name: Publish under a stable name, whatever the build called it
  distsync.core.distsync_upload:
    src: "dist/app-{{ build_number }}.tar.gz"
    name: app.tar.gz
  register: published

- name: Show the version the servers will install
  ansible.builtin.debug:
    msg: "{{ published.name }} version {{ published.version }} sha256 {{ published.sha256 }}"
"""

RETURN = r"""
name:
  description: The artifact name.
  returned: always
  type: str
  sample: app.tar.gz
version:
  description: The version id the servers install (the newest existing one when unchanged; null in check mode when an upload would happen).
  returned: always
  type: str
  sample: "42"
size:
  description: Plaintext size in bytes.
  returned: always
  type: int
  sample: 73400320
sha256:
  description: Plaintext SHA-256, hex.
  returned: always
  type: str
  sample: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
previous:
  description: The newest version before this run (name, version, size, sha256), or null.
  returned: always
  type: dict
signed_by:
  description: The public key the upload is signed with (C(ed25519:...)), or null without a C(SigningKey).
  returned: always
  type: str
  sample: ed25519:11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo
"""

from pathlib import Path

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.distsync.core.plugins.module_utils._engine import (
    require_engine,
    run_engine,
)


def _upload(module):
    from distsync.catalog import Catalog
    from distsync.config import load_config
    from distsync.upload import upload_if_changed

    cfg = load_config(module.params["config"])
    warning = cfg.unsigned_warning()
    if warning is not None:
        module.warn(warning)
    catalog = Catalog.open(cfg)
    outcome = upload_if_changed(
        cfg,
        catalog.store,
        catalog,
        Path(module.params["src"]),
        name=module.params["name"],
        force=module.params["force"],
        dry_run=module.check_mode,
    )
    return outcome, cfg.signing_key


def _signer_text(signing_key):
    from distsync.crypto.signing import format_key

    return None if signing_key is None else format_key(signing_key.public_key)


def _diff_view(facts):
    if facts is None:
        return ""
    return "".join("%s: %s\n" % (key, facts.get(key)) for key in ("version", "size", "sha256"))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            src=dict(type="path", required=True),
            name=dict(type="str"),
            force=dict(type="bool", default=False),
            config=dict(type="path", default="~/.distsync"),
        ),
        supports_check_mode=True,
    )
    require_engine(module)
    outcome, signing_key = run_engine(module, lambda: _upload(module))
    result = dict(
        outcome.after,
        changed=outcome.changed,
        previous=outcome.before,
        signed_by=_signer_text(signing_key),
    )
    if module._diff:
        result["diff"] = dict(before=_diff_view(outcome.before), after=_diff_view(outcome.after))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
