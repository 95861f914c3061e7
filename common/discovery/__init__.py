"""DP discovery of a public schema: categories, bounds, bins and missingness from noisy sums.

``heavy_hitters`` (text values by prefix-tree rounds), ``quantiles`` (bounds and bins from a
public grid) and ``protocol`` (the rounds' requests, sensitivity, cost and the schema they
yield). Plain numpy: the coordinator (``server.discovery``) runs the rounds through the secure
noisy sum and every organisation (``client.organisation``) counts its own rows.
"""

from .protocol import (
    OTHER,
    PHASE,
    TASK,
    ColumnFindings,
    DiscoveryError,
    DiscoverySettings,
    agreed_columns,
    discovered_from,
    discovery_event,
    local_kinds,
    local_vector,
    round_sensitivity,
    skeleton_schema,
)

__all__ = [
    "OTHER",
    "PHASE",
    "TASK",
    "ColumnFindings",
    "DiscoveryError",
    "DiscoverySettings",
    "agreed_columns",
    "discovered_from",
    "discovery_event",
    "local_kinds",
    "local_vector",
    "round_sensitivity",
    "skeleton_schema",
]
