"""Version numbers of the package and of the store schema it writes.

Kept apart from the package ``__init__`` so that modules inside the package can read them
without importing the package itself.
"""

__version__ = "0.1.0"
#: version of the Zarr store layout (``stores/README.md``); readers accept the same major version
SCHEMA_VERSION = "1.0"

__all__ = ["__version__", "SCHEMA_VERSION"]
