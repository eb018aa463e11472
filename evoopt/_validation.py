"""Deprecated: the checks moved to :mod:`evoopt.checks` (kept until every import switched)."""
from .checks import *  # noqa: F403
from .checks import _is_real  # noqa: F401
