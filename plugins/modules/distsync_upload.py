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
  to:
    description:
      - Only servers in one of these groups (their C(Groups)) install it, like
        C(distsync upload --to). The others report it as not targeted.
      - The groups travel inside the encrypted manifest; no group name is stored in plaintext.
      - Default every server.
    type: list
    elements: str
    version_added: "0.2.0"
  waves:
    description:
      - Install in waves of these cumulative sizes, like C(distsync upload --waves), e.g.
        V(["1", "10%", "100%"]) or V(1,10%,100%). Each is a number of servers or a
        percentage of the targeted live servers; the last must be V(100%).
      - A server of a later wave installs only once every server of the earlier waves reports
        it installed and healthy; a failure halts the rollout (see C(distsync rollout)).
    type: list
    elements: str
    version_added: "0.2.0"
  wave_wait:
    description: With O(waves), seconds to wait after a wave is healthy before the next.
    type: float
    version_added: "0.2.0"
  keep:
    description:
      - After the upload (or finding the content already uploaded), delete the stored
        contents of all but the newest O(keep) versions of O(name), like
        C(distsync upload --keep). Log entries stay; a version a server reports installed
        or pinned is never deleted.
      - In check mode nothing is deleted; RV(pruned) lists what would be.
    type: int
    version_added: "0.2.0"
  wait:
    description:
      - After the upload (or finding the content already uploaded), wait until the servers
        report this version installed, like C(distsync upload --wait).
      - Fails with one line naming the servers missing or failed and why when a server
        reports the version failed, its staged rollout is halted, or O(wait_timeout) passes.
      - Nothing is waited for in check mode.
    type: bool
    default: false
    version_added: "0.2.0"
  wait_servers:
    description:
      - With O(wait), how many servers must report the version installed.
      - Default every live server (one that rewrote its status record within three of its
        C(StatusInterval)) that is not pinned to another version.
    type: int
    version_added: "0.2.0"
  wait_timeout:
    description: With O(wait), give up after this many seconds.
    type: int
    default: 600
    version_added: "0.2.0"
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

- name: Publish to the web servers only, one canary first, then the rest five minutes later
  distsync.core.distsync_upload:
    src: dist/app.tar.gz
    to: [web]
    waves: ["1", "100%"]
    wave_wait: 300
    wait: true
    wait_timeout: 1800

- name: Publish and fail the job unless six servers installed it within ten minutes
  distsync.core.distsync_upload:
    src: dist/app.tar.gz
    wait: true
    wait_servers: 6
    wait_timeout: 600

- name: Publish and keep only the five newest builds in the bucket
  distsync.core.distsync_upload:
    src: dist/app.tar.gz
    keep: 5
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
pruned:
  description:
    - The versions of O(name) whose stored contents O(keep) deleted (would delete, in check
      mode), and the versions kept because a server reports them installed or pinned.
  returned: when O(keep) is set
  type: dict
  version_added: "0.2.0"
  contains:
    deleted:
      description: Version id and stored bytes of each deleted content.
      type: list
      elements: dict
      returned: always
      sample: [{"version": "40", "stored_bytes": 73401456}]
    kept_for_fleet:
      description: Version id and why (which servers have it installed or pinned).
      type: list
      elements: dict
      returned: always
      sample: [{"version": "39", "reason": "pinned on web-3"}]
fleet:
  description: Where the fleet stood when the wait ended.
  returned: when O(wait) waited
  type: dict
  version_added: "0.2.0"
  contains:
    installed:
      description: How many servers report the version installed.
      type: int
      returned: always
      sample: 6
    wanted:
      description: How many were waited for.
      type: int
      returned: always
      sample: 6
    message:
      description: One line, as C(distsync upload --wait) prints it.
      type: str
      returned: always
      sample: "app.tar.gz version 42: 6 of 6 servers installed it"
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
    from distsync.upload import Target, upload_if_changed

    params = module.params
    target = Target.from_options(params["to"], params["waves"], params["wave_wait"])
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
        target=target,
    )
    return outcome, cfg.signing_key


def _prune(module, name, incoming):
    from distsync.catalog import Catalog
    from distsync.config import load_config
    from distsync.retention import prune

    cfg = load_config(module.params["config"])
    plan = prune(
        cfg,
        Catalog.open(cfg),
        keep=module.params["keep"],
        names=[name],
        dry_run=module.check_mode,
        incoming=incoming,
    )
    return dict(
        deleted=[
            dict(version=v.version_id, stored_bytes=v.manifest.object_size) for v in plan.delete
        ],
        kept_for_fleet=[
            dict(version=v.version_id, reason=str(why)) for v, why in plan.kept_for_fleet
        ],
    )


def _signer_text(signing_key):
    from distsync.crypto.signing import format_key

    return None if signing_key is None else format_key(signing_key.public_key)


def _wait(module, facts):
    from distsync.catalog import Catalog
    from distsync.config import load_config
    from distsync.rollout.command import halted_check
    from distsync.status import wait_for_upload

    cfg = load_config(module.params["config"])
    catalog = Catalog.open(cfg)
    seq = int(facts["version"])
    verdict = wait_for_upload(
        cfg,
        catalog.store,
        facts["name"],
        seq,
        servers=module.params["wait_servers"],
        timeout=module.params["wait_timeout"],
        halted=halted_check(cfg, catalog, catalog.read(seq)),
    )
    return dict(installed=verdict.reached, wanted=verdict.wanted, message=verdict.message)


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
            to=dict(type="list", elements="str"),
            waves=dict(type="list", elements="str"),
            wave_wait=dict(type="float"),
            keep=dict(type="int"),
            wait=dict(type="bool", default=False),
            wait_servers=dict(type="int"),
            wait_timeout=dict(type="int", default=600),
            config=dict(type="path", default="~/.distsync"),
        ),
        supports_check_mode=True,
    )
    if module.params["wait_servers"] is not None and module.params["wait_servers"] < 1:
        module.fail_json(msg="wait_servers must be at least 1")
    if module.params["wait_timeout"] < 1:
        module.fail_json(msg="wait_timeout must be at least 1 second")
    if module.params["keep"] is not None and module.params["keep"] < 1:
        module.fail_json(msg="keep must be at least 1 (the newest version always stays)")
    require_engine(module)
    outcome, signing_key = run_engine(module, lambda: _upload(module))
    result = dict(
        outcome.after,
        changed=outcome.changed,
        previous=outcome.before,
        signed_by=_signer_text(signing_key),
    )
    if module.params["keep"] is not None:
        # In check mode an upload that would happen is one more version to keep.
        incoming = 1 if module.check_mode and outcome.changed else 0
        name = outcome.after["name"]
        if outcome.before is None:
            # A name's first version: nothing to prune, and in check mode the engine would
            # not know the name yet.
            result["pruned"] = dict(deleted=[], kept_for_fleet=[])
        else:
            result["pruned"] = run_engine(
                module, lambda: _prune(module, name, incoming), **result
            )
        result["changed"] = result["changed"] or bool(result["pruned"]["deleted"])
    if module.params["wait"] and not module.check_mode:
        # A failed wait fails the task; the upload itself stays done (changed=true).
        result["fleet"] = run_engine(module, lambda: _wait(module, outcome.after), **result)
    if module._diff:
        result["diff"] = dict(before=_diff_view(outcome.before), after=_diff_view(outcome.after))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
