"""The agent's side of volumes: a "rund-volume:<n>" bind source is the container's volume <n> in the pod's share."""
import json

import pytest

from agent.container import volumes
from agent.errors import InvalidArgument
from agent.oci.spec import parse_spec


def spec_with(*mounts):
    return parse_spec(json.dumps({"ociVersion": "1.0.2", "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
                                  "mounts": list(mounts)}).encode())


@pytest.fixture
def mounted(monkeypatch):
    calls = []
    monkeypatch.setattr(volumes, "_ensure", calls.append)
    return calls


def test_a_volume_marker_is_the_containers_directory_in_the_share(mounted):
    spec = spec_with({"destination": "/data", "type": "bind", "source": "rund-volume:3", "options": ["rbind", "ro"]})
    out = volumes.place(spec, "c1", "/run/rund/volumes")
    data = next(m for m in out.mounts if m.destination == "/data")
    assert data.source == "/run/rund/volumes/c1/3" and data.is_bind
    assert mounted == ["/run/rund/volumes"]


def test_a_spec_without_volumes_mounts_no_share(mounted):
    spec = spec_with({"destination": "/data", "type": "bind", "source": "/srv"})
    assert volumes.place(spec, "c1", "/run/rund/volumes") is spec and mounted == []


@pytest.mark.parametrize("source", ["rund-volume:", "rund-volume:../x", "rund-volume:1/../../etc"])
def test_a_volume_is_named_by_its_number_only(mounted, source):
    spec = spec_with({"destination": "/data", "type": "bind", "source": source})
    with pytest.raises(InvalidArgument, match="a volume is named by its number"):
        volumes.place(spec, "c1", "/run/rund/volumes")
