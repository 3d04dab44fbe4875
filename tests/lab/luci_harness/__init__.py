"""A stand-in for LuCI's browser runtime, a ubus endpoint and a DevTools client, for tests/lab/test_luci.py."""
