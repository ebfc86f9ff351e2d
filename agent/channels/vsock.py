"""AF_VSOCK listener (guests whose host has vhost-vsock)."""
import socket

VMADDR_CID_ANY = 0xFFFFFFFF
AGENT_PORT = 1024


def listen(port: int = AGENT_PORT) -> socket.socket:
    sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.bind((VMADDR_CID_ANY, port))
    sock.listen(16)
    sock.setblocking(False)
    return sock
