"""Staff REST API for request templates."""
