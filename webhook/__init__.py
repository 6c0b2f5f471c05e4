"""virtdev webhook: the admission server that rewrites and guards virt-launcher pods."""
