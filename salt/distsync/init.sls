{#- The distsync daemon as a hardened systemd service, like the Ansible role
    distsync.core.daemon: install -> configure -> service. #}
include:
  - distsync.install
  - distsync.config
  - distsync.service
