{#- Restart once if the engine, the configuration or the unit changed. #}
{%- from "distsync/map.jinja" import distsync with context %}
{%- set service = salt["distsync_formula.role_value"]("service") %}

include:
  - distsync.config

distsync-service:
{%- if distsync.service_state == "started" %}
  service.running:
    - name: {{ service }}
    - enable: {{ distsync.service_enabled | json }}
    - watch:
      - cmd: distsync-engine
      - file: distsync-config
      - file: distsync-unit
{%- elif distsync.service_state == "stopped" %}
  service.dead:
    - name: {{ service }}
    - enable: {{ distsync.service_enabled | json }}
{%- else %}
{{- raise("distsync formula: service_state must be started or stopped, not " ~ distsync.service_state) }}
{%- endif %}
    - require:
      - cmd: distsync-daemon-reload
