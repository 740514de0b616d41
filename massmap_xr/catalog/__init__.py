"""catalog"""

from massmap_xr.catalog.core import *  # noqa: F401,F403
from massmap_xr.catalog.core import __all__  # noqa: F401
