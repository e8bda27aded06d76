#!/usr/bin/python
# Copyright: distsync contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: distsync_setup
short_description: Create a distsync store and write the uploader's and the daemon's configs
version_added: "0.1.0"
description:
  - The Ansible face of C(distsync setup). Creates the store - a directory for
    O(storage=local), for O(storage=s3) a private bucket and two least-privilege IAM users
    (one that uploads, one for the daemons), for O(storage=swift) an OpenStack Swift container
    with its C(_segments) and C(_daemons) companions and read-only container ACLs for
    O(daemon_username) - and writes the two configuration files, mode C(0600), with a fresh
    shared secret, on the host that runs the module.
  - Idempotent - when both configs already exist and match what is asked (and for S3 the
    bucket and users carry the expected policies), nothing changes. Configs are never
    replaced unless O(force=true), which also rotates the shared secret.
  - The store gets a store record sealed with the new secret, so that a config with another
    secret is told so. A directory or bucket that already holds a store (for example after
    O(state=absent), which keeps the store's contents) is only set up again with
    O(force=true).
  - With O(state=absent), removes the configs, and for S3 the setup's users, access keys and
    policies (and with O(delete_bucket=true) the bucket and every object version in it).
  - See the collection's C(docs/setup-s3.md) for the exact IAM policies, and
    C(docs/setup-swift.md) for the Swift ACLs and what they cannot restrict.
  - For O(storage=swift), O(state=absent) removes the configs only; the containers stay.
options:
  state:
    description: Whether the setup should exist.
    type: str
    choices: [present, absent]
    default: present
  storage:
    description: Where artifacts are stored.
    type: str
    choices: [local, s3, swift]
    default: local
  bucket:
    description:
      - For O(storage=local), the directory that plays the bucket.
      - For O(storage=s3), the bucket name (default C(distsync-<setup_id>)).
      - For O(storage=swift), the container. Required, so that a second run finds it.
    type: str
  setup_id:
    description:
      - Names the S3 bucket and the IAM users. Required with O(storage=s3) so that a second
        run finds what the first created.
    type: str
  region:
    description:
      - For O(storage=s3), the AWS region (default C(us-east-1)).
      - For O(storage=swift) with Keystone, the region of the object-store endpoint.
    type: str
  endpoint:
    description: An S3- and IAM-compatible endpoint URL instead of AWS.
    type: str
  profile:
    description: The AWS profile setup itself runs as (default boto3's credential chain).
    type: str
  prefix:
    description: Key prefix for everything distsync writes in the bucket.
    type: str
  auth_url:
    description:
      - For O(storage=swift), the login URL - tempauth or Rackspace v1 (C(.../auth/v1.0)),
        or Keystone v3 (C(.../v3)).
    type: str
  username:
    description:
      - For O(storage=swift), the identity setup logs in as and the uploader keeps (an admin
        of the account, who may create containers and set their ACLs).
    type: str
  api_key:
    description: For O(storage=swift), the key of O(username) (tempauth, Rackspace v1).
    type: str
  password:
    description:
      - For O(storage=swift), the Keystone v3 password of O(username); needs O(project_name)
        and keystoneauth1 (C(pip install 'distsync[keystone]')).
    type: str
  project_name:
    description: For O(storage=swift) with Keystone, the project to scope logins to.
    type: str
  user_domain_name:
    description: For O(storage=swift) with Keystone, the domain of the users (default C(Default)).
    type: str
  project_domain_name:
    description: For O(storage=swift) with Keystone, the domain of O(project_name) (default C(Default)).
    type: str
  daemon_username:
    description:
      - For O(storage=swift), an existing identity without admin rights for the daemons;
        setup gives it read-only container ACLs (and write access to the daemons' records
        only) and checks them.
      - Without it, the daemon config carries the uploader's credentials.
    type: str
  daemon_key:
    description: The API key or (Keystone) password of O(daemon_username).
    type: str
  output_dir:
    description: The directory the daemons install artifacts into (written into the daemon config).
    type: path
    default: ~/distsync
  upload_config:
    description: Where to write the uploader's configuration.
    type: path
    default: ~/.distsync
  daemon_config:
    description: Where to write the daemon's configuration.
    type: path
    default: ~/.distsyncd
  force:
    description:
      - Replace existing configuration files, and an existing store at the same place.
        Generates a new shared secret, so the result is never idempotent; existing artifacts
        become unreadable to the new configs, and configs of the old store stop working.
    type: bool
    default: false
  delete_bucket:
    description: With O(state=absent) and O(storage=s3), also delete the bucket and all its contents.
    type: bool
    default: false
extends_documentation_fragment:
  - distsync.core.engine
attributes:
  check_mode:
    description: Decides with read-only calls whether anything would change; changes nothing.
    support: full
  diff_mode:
    description: Nothing to diff; the files hold secrets.
    support: none
  idempotent:
    description: A second identical run reports no change (unless O(force=true)).
    support: full
author:
  - distsync maintainers (@distsync)
"""

EXAMPLES = r"""
- name: A local store on a shared file system
  distsync.core.distsync_setup:
    storage: local
    bucket: /srv/shared/distsync-bucket
    output_dir: /srv/artifacts

- name: An S3 bucket and two least-privilege identities
  distsync.core.distsync_setup:
    storage: s3
    setup_id: prod
    region: eu-west-1
    upload_config: ~/ci/distsync.toml
    daemon_config: ~/fleet/distsyncd.toml
  delegate_to: localhost

- name: An OpenStack Swift container, with a read-only identity for the daemons
  distsync.core.distsync_setup:
    storage: swift
    bucket: distsync-prod
    auth_url: https://swift.example/auth/v1.0
    username: acct:ci
    api_key: "{{ vault_swift_ci_key }}"
    daemon_username: acct:fleet
    daemon_key: "{{ vault_swift_fleet_key }}"
  delegate_to: localhost

- name: Tear the S3 setup down, bucket included
  distsync.core.distsync_setup:
    state: absent
    storage: s3
    setup_id: prod
    delete_bucket: true
"""

RETURN = r"""
storage:
  description: The storage that was set up.
  returned: always
  type: str
  sample: s3
bucket:
  description: The bucket name, or the directory for local storage.
  returned: when O(state=present)
  type: str
  sample: distsync-prod
setup_id:
  description: The setup id (S3 only).
  returned: when O(storage=s3)
  type: str
  sample: prod
upload_config:
  description: Path of the uploader's configuration file.
  returned: always
  type: str
daemon_config:
  description: Path of the daemon's configuration file.
  returned: always
  type: str
notes:
  description: What the operator should know (never a secret).
  returned: always
  type: list
  elements: str
removed:
  description: What O(state=absent) removed.
  returned: when O(state=absent)
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.distsync.core.plugins.module_utils._engine import (
    require_engine,
    run_engine,
)


def _swift(params):
    from distsync.provision import SwiftSetup

    return SwiftSetup(
        auth_url=params["auth_url"],
        username=params["username"],
        key=params["api_key"] or params["password"],
        project_name=params["project_name"] if params["password"] else None,
        user_domain_name=params["user_domain_name"],
        project_domain_name=params["project_domain_name"],
        region=params["region"],
        daemon_username=params["daemon_username"],
        daemon_key=params["daemon_key"],
    )


def _options(params):
    from distsync.provision import SetupOptions

    return SetupOptions(
        storage=params["storage"],
        bucket=params["bucket"],
        region=params["region"],
        endpoint=params["endpoint"],
        output_dir=params["output_dir"],
        upload_config=params["upload_config"],
        daemon_config=params["daemon_config"],
        force=params["force"],
        setup_id=params["setup_id"],
        prefix=params["prefix"],
        profile=params["profile"],
        swift=_swift(params),
    )


def present(module):
    from distsync.provision import ensure_setup

    report = ensure_setup(_options(module.params), dry_run=module.check_mode, warn=module.warn)
    return dict(
        changed=report.changed,
        storage=module.params["storage"],
        bucket=report.bucket,
        setup_id=report.setup_id,
        upload_config=report.upload_config,
        daemon_config=report.daemon_config,
        notes=report.notes,
    )


def absent(module):
    from distsync.provision import DestroyOptions, ensure_absent

    params = module.params
    destroy = None
    if params["storage"] == "s3":
        destroy = DestroyOptions(
            setup_id=params["setup_id"],
            region=params["region"],
            endpoint=params["endpoint"],
            profile=params["profile"],
            bucket=params["bucket"],
            delete_bucket=params["delete_bucket"],
        )
    configs = [params["upload_config"], params["daemon_config"]]
    report = ensure_absent(configs, destroy=destroy, dry_run=module.check_mode)
    return dict(
        changed=report.changed,
        storage=params["storage"],
        setup_id=params["setup_id"],
        upload_config=configs[0],
        daemon_config=configs[1],
        notes=[],
        removed=report.removed,
    )


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", choices=["present", "absent"], default="present"),
            storage=dict(type="str", choices=["local", "s3", "swift"], default="local"),
            bucket=dict(type="str"),
            setup_id=dict(type="str"),
            region=dict(type="str"),
            endpoint=dict(type="str"),
            profile=dict(type="str"),
            prefix=dict(type="str"),
            output_dir=dict(type="path", default="~/distsync"),
            upload_config=dict(type="path", default="~/.distsync"),
            daemon_config=dict(type="path", default="~/.distsyncd"),
            force=dict(type="bool", default=False),
            delete_bucket=dict(type="bool", default=False),
            auth_url=dict(type="str"),
            username=dict(type="str"),
            api_key=dict(type="str", no_log=True),
            password=dict(type="str", no_log=True),
            project_name=dict(type="str"),
            user_domain_name=dict(type="str"),
            project_domain_name=dict(type="str"),
            daemon_username=dict(type="str"),
            daemon_key=dict(type="str", no_log=True),
        ),
        required_if=[
            ("storage", "s3", ["setup_id"]),
            ("storage", "swift", ["bucket", "auth_url", "username"]),
            ("storage", "swift", ["api_key", "password"], True),
        ],
        mutually_exclusive=[("api_key", "password")],
        required_together=[("daemon_username", "daemon_key")],
        required_by={"password": "project_name"},
        supports_check_mode=True,
    )
    require_engine(module)
    action = present if module.params["state"] == "present" else absent
    module.exit_json(**run_engine(module, lambda: action(module)))


if __name__ == "__main__":
    main()
