"""virtdev certs."""
