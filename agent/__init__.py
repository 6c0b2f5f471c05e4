"""virtdev agent."""
