"""loxgw: run Loxone gear on a segmented home network."""

__version__ = "0.1.0"
