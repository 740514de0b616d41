"""inference"""

from massmap_xr.inference.core import *  # noqa: F401,F403
from massmap_xr.inference.core import __all__  # noqa: F401
