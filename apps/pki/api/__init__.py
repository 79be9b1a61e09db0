"""Staff REST API for CA servers."""
