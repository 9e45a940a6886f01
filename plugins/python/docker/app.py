"""The Docker engine in Python: the same contract as the Rust `keepwarm_docker` plugin, written
with componentize-py. It drives one Docker daemon (route `docker`) over its HTTP API and
publishes each container's action proxy port on `publish-ip` (default 127.0.0.1).

Settings (`--config` / `[plugin] config`): `publish-ip`, `api-version` (default v1.41).
Built by `componentize-py -d ../../../wit -w container-factory componentize app -o keepwarm_docker_py.wasm`.
"""
import json
import sys
from typing import List, Tuple
from urllib.parse import quote

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import state
from wit_world.imports.keepwarm_factory_types import (
    Capabilities, Container, ContainerSpec, ContainerState, FactoryError_Capacity,
    FactoryError_Conflict, FactoryError_ImageMissing, FactoryError_InvalidSpec,
    FactoryError_NotFound, PluginInfo,
)

import http_client

PORT_LABEL = "keepwarm.port"
SETTINGS = {"publish-ip": "127.0.0.1", "api-version": "v1.41"}
STATES = {"running": ContainerState.RUNNING, "paused": ContainerState.PAUSED,
          "created": ContainerState.CREATING, "exited": ContainerState.STOPPED,
          "dead": ContainerState.STOPPED}


def setting(key: str) -> str:
    value = state.get("config/" + key)
    return value.decode() if value is not None else SETTINGS[key]


def url(path: str) -> str:
    return f"http://docker/{setting('api-version')}{path}"


def gone(id: str) -> Err:
    return Err(FactoryError_NotFound(f"container {id} does not exist"))


def proxy_port(labels: dict) -> int:
    return int(labels.get(PORT_LABEL, "8080"))


def inspect(id: str) -> dict:
    r = http_client.request("GET", url(f"/containers/{quote(id, safe='')}/json"))
    if r.status == 404:
        raise gone(id)
    return r.ok(f"inspect {id}").json()


def described(data: dict) -> Container:
    labels = data.get("Config", {}).get("Labels") or {}
    status = STATES.get(data.get("State", {}).get("Status"), ContainerState.UNKNOWN)
    address = ""
    if status in (ContainerState.RUNNING, ContainerState.PAUSED):
        port = proxy_port(labels)
        bound = (data.get("NetworkSettings", {}).get("Ports") or {}).get(f"{port}/tcp") or []
        if not bound:
            raise Err(FactoryError_Conflict(f"{data.get('Id')}: port {port} is not published"))
        address = f"{setting('publish-ip')}:{bound[0]['HostPort']}"
    return Container(id=data["Id"], name=data.get("Name", "").lstrip("/"), address=address,
                     state=status, labels=sorted(labels.items()), handle="")


def post(id: str, action: str) -> None:
    r = http_client.request("POST", url(f"/containers/{quote(id, safe='')}/{action}"))
    if r.status == 404:
        raise gone(id)
    if not (200 <= r.status < 300 or r.status == 304):
        raise r.error(f"{action} {id}")


class Factory(exports.Factory):
    def describe(self) -> PluginInfo:
        return PluginInfo(name="docker-py", version="0.1.0", engine="Docker Engine API v1.41+ (Python)",
                          capabilities=Capabilities.PAUSE | Capabilities.LOGS | Capabilities.CONCURRENT)

    def init(self, config: List[Tuple[str, str]]) -> None:
        unknown = [k for k, _ in config if k not in SETTINGS]
        if unknown:
            raise Err(FactoryError_InvalidSpec(f"unknown settings {unknown}: use {sorted(SETTINGS)}"))
        for key, value in config:
            try:
                state.put("config/" + key, value.encode())
            except Err as e:
                raise Err(FactoryError_Capacity(str(e.value)))
        http_client.request("GET", f"http://docker/_ping").ok("ping the Docker daemon")

    def create(self, spec: ContainerSpec) -> Container:
        if not spec.image:
            raise Err(FactoryError_InvalidSpec("image is empty"))
        port = f"{spec.port}/tcp"
        memory = spec.memory_mb * 1024 * 1024
        body = {
            "Image": spec.image,
            "Env": [f"{k}={v}" for k, v in spec.env],
            "Labels": dict(spec.labels, **{PORT_LABEL: str(spec.port)}),
            "ExposedPorts": {port: {}},
            "HostConfig": {
                "Memory": memory, "MemorySwap": memory, "CpuShares": spec.cpu_shares or 0,
                "NetworkMode": spec.network or "default",
                "PortBindings": {port: [{"HostIp": setting("publish-ip"), "HostPort": ""}]},
            },
        }
        r = http_client.request("POST", url(f"/containers/create?name={quote(spec.name, safe='')}"),
                                json.dumps(body).encode())
        if r.status == 404:
            raise Err(FactoryError_ImageMissing(spec.image))
        id = r.ok(f"create {spec.name}").json()["Id"]
        try:
            post(id, "start")
        except Err:
            http_client.request("DELETE", url(f"/containers/{id}?force=1&v=1"))
            raise
        return described(inspect(id))

    def attach(self, known: Container) -> Container:
        current = described(inspect(known.id))
        if current.state == ContainerState.PAUSED:
            post(known.id, "unpause")
            current = described(inspect(known.id))
        if current.state != ContainerState.RUNNING:
            raise Err(FactoryError_Conflict(f"container {known.id} is {current.state.name.lower()}, not running"))
        current.handle = known.handle
        return current

    def list_containers(self, labels: List[Tuple[str, str]]) -> List[Container]:
        filters = quote(json.dumps({"label": [f"{k}={v}" for k, v in labels]}), safe="")
        listed = http_client.request("GET", url(f"/containers/json?all=1&filters={filters}"))
        found = []
        for summary in listed.ok("list containers").json():
            theirs = summary.get("Labels") or {}
            port = proxy_port(theirs)
            status = STATES.get(summary.get("State"), ContainerState.UNKNOWN)
            public = [p for p in summary.get("Ports") or [] if p.get("PrivatePort") == port and p.get("PublicPort")]
            address = f"{setting('publish-ip')}:{public[0]['PublicPort']}" if public else ""
            found.append(Container(id=summary["Id"], name=(summary.get("Names") or [""])[0].lstrip("/"),
                                   address=address, state=status, labels=sorted(theirs.items()), handle=""))
        return found

    def pause(self, id: str) -> None:
        post(id, "pause")

    def resume(self, id: str) -> None:
        post(id, "unpause")

    def destroy(self, id: str) -> None:
        r = http_client.request("DELETE", url(f"/containers/{quote(id, safe='')}?force=1&v=1"))
        if r.status == 404:
            raise gone(id)
        r.ok(f"remove {id}")

    def logs(self, id: str, since_ms: int, max_bytes: int) -> str:
        since = f"{since_ms // 1000}.{since_ms % 1000:03d}"
        r = http_client.request("GET", url(f"/containers/{quote(id, safe='')}/logs?stdout=1&stderr=1&since={since}"))
        if r.status == 404:
            raise gone(id)
        return demux(r.ok(f"logs of {id}").body, max_bytes)


def demux(raw: bytes, max_bytes: int) -> str:
    """Docker's log frames (8-byte headers: stream, 0, 0, 0, big-endian length) as text, at
    most `max_bytes`; a stream without frames (a TTY container) as it is."""
    if not (len(raw) >= 8 and raw[0] in (0, 1, 2) and raw[1:4] == b"\0\0\0"):
        return raw[:max_bytes].decode(errors="replace")
    out, rest = bytearray(), raw
    while len(rest) >= 8 and len(out) < max_bytes:
        size = int.from_bytes(rest[4:8], "big")
        out += rest[8:8 + size][:max_bytes - len(out)]
        rest = rest[8 + size:]
    return bytes(out).decode(errors="replace")
