"""The local check of luci-app-loxgw in a real LuCI; see README.md. Never collected by pytest."""
