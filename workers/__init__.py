"""Worker processes: stateless, so run as many as the load needs."""
