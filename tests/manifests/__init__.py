"""Checks of manifests/, the Dockerfile and their agreement with virtdev.catalogue."""
