"""Wire formats shared by the host (rund) and the guest (agent): generated protobuf code in
``proto.gen`` and our ttrpc implementation in ``proto.ttrpc``."""
