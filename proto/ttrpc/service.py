"""The server's table of services and methods, built from protobuf service descriptors."""
from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from .errors import Unimplemented

log = logging.getLogger(__name__)

Handler = Callable[[Any, Message], Awaitable[Message]]


class Method(NamedTuple):
    service: str
    name: str
    handler: Handler
    request_type: type[Message]
    response_type: type[Message]


class ServiceTable:
    def __init__(self) -> None:
        self._services: dict[str, dict[str, Method]] = {}

    def register(self, descriptor: ServiceDescriptor, impl: object) -> None:
        """Route every unary method of ``descriptor`` to the same-named ``async def`` of ``impl``.

        Methods ``impl`` lacks, and streaming methods, are left out: callers get Unimplemented.
        """
        name = descriptor.full_name
        if name in self._services:
            raise ValueError(f"service {name} is already registered")
        methods: dict[str, Method] = {}
        for md in descriptor.methods:
            if md.client_streaming or md.server_streaming:
                log.warning("ttrpc: %s/%s is a streaming method; not served", name, md.name)
                continue
            handler = getattr(impl, md.name, None)
            if handler is None:
                log.debug("ttrpc: %s has no %s; it answers Unimplemented", type(impl).__name__, md.name)
                continue
            if not inspect.iscoroutinefunction(handler):
                raise TypeError(f"{type(impl).__name__}.{md.name} must be an async def")
            methods[md.name] = Method(
                name, md.name, handler, GetMessageClass(md.input_type), GetMessageClass(md.output_type)
            )
        self._services[name] = methods

    def lookup(self, service: str, method: str) -> Method:
        methods = self._services.get(service)
        if methods is None:
            raise Unimplemented(f"service {service}")
        found = methods.get(method)
        if found is None:
            raise Unimplemented(f"method {method}")
        return found
