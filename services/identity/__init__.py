"""identity: the network-wide member, and the only holder of personal data."""
