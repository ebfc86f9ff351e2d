"""The in-guest agent: PID 1 of every rund sandbox VM. Never imports ``rund``."""

__version__ = "0.1.0"
