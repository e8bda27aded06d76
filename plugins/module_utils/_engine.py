# -*- coding: utf-8 -*-
# Copyright: distsync contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

"""The single place the modules import the distsync engine from.

PRIVATE: this module_util is internal to the distsync.core collection; its API may change
without notice. Like amazon.aws's botocore.py, it turns a missing or too old engine into one
``missing_required_lib`` failure instead of a traceback.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import traceback

from ansible.module_utils.basic import missing_required_lib

MINIMUM_ENGINE_VERSION = "0.1.0"
ENGINE_REQUIREMENT = "distsync >= %s (pip install the collection's python/ directory)" % (
    MINIMUM_ENGINE_VERSION
)

ENGINE_IMPORT_ERROR = None
try:
    import distsync  # noqa: F401  pylint: disable=unused-import

    HAS_ENGINE = True
except ImportError:
    HAS_ENGINE = False
    ENGINE_IMPORT_ERROR = traceback.format_exc()


def _version_tuple(text):
    parts = []
    for piece in text.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def require_engine(module):
    """Fail the module cleanly unless a recent enough engine is importable."""
    if not HAS_ENGINE:
        module.fail_json(
            msg=missing_required_lib(ENGINE_REQUIREMENT), exception=ENGINE_IMPORT_ERROR
        )
    if _version_tuple(distsync.__version__) < _version_tuple(MINIMUM_ENGINE_VERSION):
        module.fail_json(
            msg="distsync engine %s is too old: %s is required"
            % (distsync.__version__, ENGINE_REQUIREMENT)
        )


def run_engine(module, action, **facts):
    """Call ``action()``; an engine error becomes ``fail_json(msg=<its one line>, **facts)``
    (``facts``: what the task did before the step that failed, e.g. ``changed``)."""
    from distsync.errors import DistsyncError

    try:
        return action()
    except DistsyncError as exc:
        module.fail_json(msg=str(exc), **facts)
