"""Evidence: the device identity, the audit trail, clips by stream copy, signed export bundles and their offline check."""
