from ._validation import *  # noqa: F401,F403  TEMPORARY (helper's module replaces it)
from ._validation import check_positive  # noqa: F401
