"""Byte pipes the agent serves ttrpc on: a unix socket (host tests), AF_VSOCK, a virtio-serial port."""
