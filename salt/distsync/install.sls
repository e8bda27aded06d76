{#- The engine in a root-owned virtualenv, installed as the role installs it: the same
    directories, requirement and pip arguments (the role's own vars/main.yml, evaluated by
    the distsync_formula module). pip runs only when what should be installed differs from
    what the last successful install recorded in the venv, so a second run changes nothing. #}
{%- from "distsync/map.jinja" import distsync with context %}
{%- set role = salt["distsync_formula.role_value"] %}
{%- set home = role("home") %}
{%- set payload_dir = role("payload_dir") %}
{%- set marker = role("install_marker", distsync) %}
{%- set requirement = role("requirement", distsync) %}
{%- set pip_args = role("pip_args", distsync) %}
{%- set request = home ~ "/install-request.json" %}
{%- set uses_wheelhouse = distsync.install_source != "pypi" and distsync.wheelhouse | length > 0 %}
{%- if distsync.install_source not in ["source", "pypi", "wheelhouse"] %}
{{- raise("distsync formula: install_source must be source, pypi or wheelhouse, not " ~ distsync.install_source) }}
{%- elif distsync.install_source == "wheelhouse" and not uses_wheelhouse %}
{{- raise("distsync formula: install_source wheelhouse needs distsync:wheelhouse (a salt:// directory of wheels)") }}
{%- endif %}

{#- Ask the interpreter first: a host that can already make a venv needs no package manager. #}
{%- if distsync.system_packages and salt["cmd.retcode"]([distsync.python, "-c", "import venv, ensurepip; ensurepip.version()"], python_shell=False, ignore_retcode=True) != 0 %}
distsync-system-packages:
  pkg.installed:
    - pkgs: {{ distsync.system_packages | json }}
    - require_in:
      - cmd: distsync-venv
{%- endif %}

distsync-group:
  group.present:
    - name: {{ distsync.group }}
    - system: true

{#- The state directory doubles as home, so a config without StateDir still keeps its
    state inside a directory the unit may write. #}
distsync-user:
  user.present:
    - name: {{ distsync.user }}
    - gid: {{ distsync.group }}
    - fullname: distsync daemon
    - system: true
    - shell: /usr/sbin/nologin
    - home: {{ distsync.state_dir }}
    - createhome: false
    - require:
      - group: distsync-group

distsync-home:
  file.directory:
    - name: {{ home }}
    - user: root
    - group: root
    - mode: "0755"

{%- if distsync.install_source == "source" %}

distsync-payload-source:
  file.recurse:
    - name: {{ payload_dir }}/source
    - source: {{ distsync.source_path }}
    - user: root
    - group: root
    - dir_mode: "0755"
    - file_mode: "0644"
    - clean: true
    # What a checkout may hold beside the source: never shipped (as the role's packer).
    - exclude_pat: E@(^|/)(__pycache__|build|dist|[^/]*\.egg-info|\.mypy_cache|\.ruff_cache|\.pytest_cache)(/|$)|\.py[co]$
    - require:
      - file: distsync-home
    - require_in:
      - file: distsync-install-invalidate
    - onchanges_in:
      - file: distsync-install-invalidate
{%- endif %}
{%- if uses_wheelhouse %}

distsync-payload-wheels:
  file.recurse:
    - name: {{ payload_dir }}/wheels
    - source: {{ distsync.wheelhouse }}
    - user: root
    - group: root
    - dir_mode: "0755"
    - file_mode: "0644"
    - clean: true
    - include_pat: "*.whl"
    - require:
      - file: distsync-home
    - require_in:
      - file: distsync-install-invalidate
    - onchanges_in:
      - file: distsync-install-invalidate
{%- endif %}

distsync-venv:
  cmd.run:
    - name: {{ [distsync.python, "-m", "venv", distsync.venv] | map("quote") | join(" ") }}
    - creates: {{ distsync.venv }}/bin/python

{#- Everything that shapes the install; a change in any part reinstalls. #}
distsync-install-request:
  file.managed:
    - name: {{ request }}
    - contents: {{ {"source": distsync.install_source, "requirement": requirement, "pip_args": pip_args} | json | yaml_dquote }}
    - user: root
    - group: root
    - mode: "0644"
    - require:
      - file: distsync-home

{#- New payload: forget the last install, so a pip that fails now is retried next time. #}
distsync-install-invalidate:
  file.absent:
    - name: {{ marker }}
    - onchanges:
      - file: distsync-install-request

{#- --force-reinstall: a rebuilt wheel or changed source keeps its version number, and pip
    would otherwise call it "already satisfied". The marker is written only after pip
    succeeded. #}
{%- set pip = [distsync.venv ~ "/bin/pip", "install", "--force-reinstall", "--no-input", "--disable-pip-version-check"] + pip_args + [requirement] %}
distsync-engine:
  cmd.run:
    - name: {{ (pip | map("quote") | join(" ")) ~ " && cp " ~ (request | quote) ~ " " ~ (marker | quote) }}
    - unless: cmp -s {{ request | quote }} {{ marker | quote }}
    - require:
      - cmd: distsync-venv
      - file: distsync-install-request
      - file: distsync-install-invalidate
