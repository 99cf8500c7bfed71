"""jaxlat: learned, differentiable latency prediction for neural-network modules and models.

Imports JAX, never torch. Reads the datasets that `profilers` writes.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("jaxlat")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
