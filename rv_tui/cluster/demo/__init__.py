"""The built-in demo cluster: a simulated Rivanna implementing the real Cluster interface."""

from .cluster import DEMO_NOTICE, DEMO_USER, DemoCluster

__all__ = ["DEMO_NOTICE", "DEMO_USER", "DemoCluster"]
