"""The device API (/api/device/v1/) and the staff REST API for devices, groups and
enrollment codes."""
