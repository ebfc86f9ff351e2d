"""Typed per-method callables for a service, over a Client: ``await stub.Health(req, timeout=1)``."""
from __future__ import annotations

from collections.abc import Awaitable, Callable

from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from .client import Client, Metadata


class Stub:
    """Has one attribute per unary method of the service, named as in the .proto."""

    def __init__(self, client: Client, service: ServiceDescriptor) -> None:
        self._client = client
        self._service = service.full_name
        for md in service.methods:
            if not (md.client_streaming or md.server_streaming):
                setattr(self, md.name, self._method(md.name, GetMessageClass(md.output_type)))

    def _method(self, name: str, response_cls: type[Message]) -> Callable[..., Awaitable[Message]]:
        call = self._client.call
        service = self._service

        def method(request: Message, *, timeout: float | None = None, metadata: Metadata | None = None):
            return call(service, name, request, response_cls, timeout, metadata)

        method.__name__ = name
        method.__qualname__ = f"Stub[{service}].{name}"
        return method
