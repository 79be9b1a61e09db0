"""Staff REST API for the certificate inventory."""
