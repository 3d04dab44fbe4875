"""Paths the daemon and its command-line clients share, in a module that costs nothing to import.

`loxgw status` reads only these and the UCI file: the config model (catalogue,
schema) would cost it more than the daemon takes to answer.
"""

DEFAULT_PATH = "/etc/config/loxgw"
DEFAULT_STATUS_SOCKET = "/var/run/loxgw/status.sock"
