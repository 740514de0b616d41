"""Version numbers of the package and of the store schema it writes.

Kept apart from the package ``__init__`` so that modules inside the package can read them
without importing the package itself.
"""

__version__ = "0.1.0"
#: version of the Zarr store layout (``stores/README.md``); readers accept the same major version
SCHEMA_VERSION = "1.0"
#: version of the posterior kernel's numerics (cube attribute ``kernel_version``): bump it whenever a change
#: makes any posterior value differ, so that recipe stores (computed on read) of older numerics are refused
KERNEL_VERSION = "1"

__all__ = ["__version__", "SCHEMA_VERSION", "KERNEL_VERSION"]
