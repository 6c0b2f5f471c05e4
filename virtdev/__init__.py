"""virtdev: run KubeVirt's virt-launcher pods without privileges (shared vocabulary and CLI)."""

__version__ = "0.1.0"
