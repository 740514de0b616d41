"""store"""

from massmap_xr.store.core import *  # noqa: F401,F403
from massmap_xr.store.core import __all__  # noqa: F401
