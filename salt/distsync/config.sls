{#- The daemon's configuration and the systemd unit, both rendered from the Ansible role's
    own templates (roles/daemon/templates, through files/role) by the distsync_formula
    module: one source for both tools. #}
{%- from "distsync/map.jinja" import distsync with context %}
{%- set role = salt["distsync_formula.role_value"] %}
{%- set config_dir = role("config_dir") %}
{%- set config_file = role("config_file") %}
{%- if not distsync.get("shared_secret") or not distsync.get("storage_bucket") %}
{{- raise("distsync formula: set pillar distsync:shared_secret and distsync:storage_bucket") }}
{%- endif %}

include:
  - distsync.install

distsync-config-dir:
  file.directory:
    - name: {{ config_dir }}
    - user: root
    - group: {{ distsync.group }}
    - mode: "0750"
    - require:
      - user: distsync-user

distsync-output-dir:
  file.directory:
    - name: {{ distsync.output_dir }}
    - user: {{ distsync.user }}
    - group: {{ distsync.group }}
    - mode: {{ distsync.output_dir_mode | yaml_dquote }}
    - makedirs: true
    - require:
      - user: distsync-user

distsync-state-dir:
  file.directory:
    - name: {{ distsync.state_dir }}
    - user: {{ distsync.user }}
    - group: {{ distsync.group }}
    - mode: "0700"
    - makedirs: true
    - require:
      - user: distsync-user

{%- for release in distsync.releases %}

distsync-release-dir-{{ loop.index }}:
  file.directory:
    - name: {{ release.dir }}
    - user: {{ distsync.user }}
    - group: {{ distsync.group }}
    - mode: "0755"
    - makedirs: true
    - require:
      - user: distsync-user
{%- endfor %}

{#- It holds the shared secret: no diff is ever shown. The installed engine loads the
    candidate before it replaces the live file, so a bad value never reaches the daemon
    (the check runs for real only, not with test=True). #}
distsync-config:
  file.managed:
    - name: {{ config_file }}
    - contents: {{ salt["distsync_formula.render"]("distsyncd.toml.j2", distsync) | yaml_dquote }}
    - user: {{ distsync.user }}
    - group: {{ distsync.group }}
    - mode: "0600"
    - show_changes: false
    - check_cmd: {{ distsync.venv }}/bin/python -m distsync.checkconfig
    - tmp_dir: {{ config_dir }}
    - tmp_ext: .toml
    - require:
      - file: distsync-config-dir
      - cmd: distsync-engine

distsync-unit:
  file.managed:
    - name: {{ role("unit_file") }}
    - contents: {{ salt["distsync_formula.render"]("distsync.service.j2", distsync) | yaml_dquote }}
    - user: root
    - group: root
    - mode: "0644"

{#- A changed unit must be read before the restart uses it. #}
distsync-daemon-reload:
  cmd.run:
    - name: systemctl daemon-reload
    - onchanges:
      - file: distsync-unit
