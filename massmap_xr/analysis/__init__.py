"""analysis"""

from massmap_xr.analysis.core import *  # noqa: F401,F403
from massmap_xr.analysis.core import __all__  # noqa: F401
