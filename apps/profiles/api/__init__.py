"""Staff REST API for profiles and their assignments."""
