"""
Helpers of the distsync formula: render the Ansible role's own templates on the minion.

The systemd unit and the daemon's configuration are written from ONE source, the templates
of the ``distsync.core.daemon`` role (``roles/daemon/templates``, reached through the
formula's ``files/role`` link): there is no Salt copy of either that could drift. They are
rendered the way Ansible's ``template`` module renders them (``trim_blocks``, an undefined
variable is an error, and the few Ansible filters they use), with the role's variables
filled in from the formula's settings: setting ``X`` is the role's ``distsync_daemon_X``,
the role's ``defaults/main.yml`` supplies every variable the settings leave out, and its
``vars/main.yml`` the fixed paths. So a variable the role gains reaches Salt users as a
setting of the same name, with the same default.

This module needs nothing but Salt (Jinja and YAML come with it): unlike the ``distsync``
execution module it does not import the engine, which the formula installs into a
virtualenv of its own, not into Salt's Python.
"""

import json
import shlex

import jinja2
import jinja2.meta
import jinja2.nativetypes
import yaml
from salt.exceptions import CommandExecutionError

__virtualname__ = "distsync_formula"

ROLE_URL = "salt://distsync/files/role"
PREFIX = "distsync_daemon_"
MANAGED = "Managed by Salt (the distsync formula); local changes will be overwritten."


def __virtual__():
    return __virtualname__


# -- the Ansible filters the role's templates use ------------------------------------------


def _comment(text, style="plain"):
    """Ansible's ``comment`` filter, plain style: '#', each line as '# line', '#'."""
    if style != "plain":
        raise jinja2.TemplateRuntimeError(
            f"comment: only the plain style is supported, not {style!r}"
        )
    lines = [f"# {line}" if line else "#" for line in str(text).split("\n")]
    return "\n".join(["#", *lines, "#"])


def _to_json(value, **kwargs):
    return json.dumps(value, **kwargs)


def _bool(value):
    """Ansible's ``bool`` filter: yes/on/true/y/t/1 (any case) and the number 1 are true."""
    if isinstance(value, bool) or value is None:
        return bool(value)
    if isinstance(value, (int, float)):
        return value == 1
    return str(value).strip().lower() in ("yes", "on", "1", "true", "y", "t")


FILTERS = {"comment": _comment, "to_json": _to_json, "bool": _bool, "quote": shlex.quote}


def _environment():
    # Ansible's template module: trim_blocks on, lstrip_blocks off, undefined is an error,
    # the template's trailing newline kept.
    env = jinja2.Environment(
        trim_blocks=True,
        lstrip_blocks=False,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )
    env.filters.update(FILTERS)
    return env


def _literal_vars(data):
    """The role's fixed values; its templated ones (Ansible expressions) are left out."""
    return {
        key: value
        for key, value in (data or {}).items()
        if not (isinstance(value, str) and "{{" in value)
    }


def render_role_template(source, role_defaults, role_vars, settings, managed=MANAGED):
    """Render a role template's text with the formula's ``settings`` (pure: no Salt calls).

    ``role_defaults`` and ``role_vars`` are the parsed YAML of the role's defaults/main.yml
    and vars/main.yml.
    """
    context = _literal_vars(role_defaults)
    context.update(_literal_vars(role_vars))
    for key, value in (settings or {}).items():
        context[PREFIX + key] = value
    context["ansible_managed"] = managed
    try:
        return _environment().from_string(source).render(context)
    except jinja2.TemplateError as exc:
        raise CommandExecutionError(
            f"distsync formula: cannot render the role's template: {exc}"
        ) from None


def _fetch(path):
    text = __salt__["cp.get_file_str"](f"{ROLE_URL}/{path}")
    if not isinstance(text, str):
        raise CommandExecutionError(
            f"distsync formula: {ROLE_URL}/{path} is not on the file server "
            "(files/role must link to the collection's roles/daemon)"
        )
    return text


def render(template, settings=None):
    """
    Render ``template`` (``distsync.service.j2`` or ``distsyncd.toml.j2``) of the daemon
    role with the formula's settings (the role's variables without ``distsync_daemon_``).

    CLI Example:

    .. code-block:: bash

        salt-call --local distsync_formula.render distsync.service.j2 '{"torrent": true}'
    """
    if template not in ("distsync.service.j2", "distsyncd.toml.j2"):
        raise CommandExecutionError(f"distsync formula: no role template {template!r}")
    return render_role_template(
        _fetch(f"templates/{template}"),
        yaml.safe_load(_fetch("defaults/main.yml")),
        yaml.safe_load(_fetch("vars/main.yml")),
        settings,
    )


def evaluate_role_value(name, role_defaults, role_vars, settings):
    """The value of the role's ``_distsync_daemon_<name>`` (vars/main.yml) for ``settings``.

    Templated values are Ansible expressions over other variables: they are evaluated like
    Ansible does, lists staying lists, each variable they use resolved first (pure).
    """
    raw = dict(role_vars or {})
    context = dict(role_defaults or {})
    for key, value in (settings or {}).items():
        context[PREFIX + key] = value
    native = jinja2.nativetypes.NativeEnvironment(undefined=jinja2.StrictUndefined)
    native.filters.update(FILTERS)

    def resolve(key, seen):
        if key in seen:
            raise CommandExecutionError(f"distsync formula: {key} refers to itself")
        value = raw[key]
        if not (isinstance(value, str) and "{{" in value):
            return value
        for used in jinja2.meta.find_undeclared_variables(native.parse(value)):
            if used in raw and used not in context:
                context[used] = resolve(used, (*seen, key))
        try:
            return native.from_string(value).render(context)
        except jinja2.TemplateError as exc:
            raise CommandExecutionError(f"distsync formula: cannot evaluate {key}: {exc}") from None

    key = f"_{PREFIX}{name}"
    if key not in raw:
        raise CommandExecutionError(f"distsync formula: the role has no variable {key}")
    return resolve(key, ())


def role_value(name, settings=None):
    """
    The role's own value of ``_distsync_daemon_<name>`` for the formula's settings, e.g.
    ``config_file`` or ``requirement``: the formula installs and configures with the same
    paths, requirement and pip arguments as the role.

    CLI Example:

    .. code-block:: bash

        salt-call --local distsync_formula.role_value pip_args '{"wheelhouse": "salt://wheels"}'
    """
    return evaluate_role_value(
        name,
        yaml.safe_load(_fetch("defaults/main.yml")),
        yaml.safe_load(_fetch("vars/main.yml")),
        settings,
    )
