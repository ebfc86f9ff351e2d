"""The containerd shim v2 edge: the binary's actions (start, delete, serve) and the Task service. Protobuf types
stop here; the runtime below sees domain objects only."""
