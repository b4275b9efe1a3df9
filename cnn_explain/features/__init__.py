"""Inside the network: feature maps, filters, activation maximization, the worked arithmetic of one output.

The function names are bound here after their submodules load, so
``cnn_explain.features.filters`` is the function, not the module.
"""

from .arithmetic import arithmetic
from .filters import filters
from .maps import feature_maps
from .maximize import maximize

__all__ = ["feature_maps", "filters", "maximize", "arithmetic"]
