#!/usr/bin/env python3
"""Probe a uni-wizard gRPC endpoint with the stock Python gRPC client, as an outsider would.

Calls grpc.health.v1 Check (overall and per service), lists services through server
reflection (v1, falling back to v1alpha), and prints one JSON report on stdout:

    {"target": ..., "overall": "SERVING" | {"error": CODE, "details": ...},
     "reflection": {"version": "v1" | "v1alpha", "services": [...]} | {"error": ...},
     "services": {"<name>": "SERVING" | {"error": ...}}}

Per-service checks cover every service reflection lists plus any named with --service.
Exit code 0 whenever a report was printed; the caller judges it.

Usage: grpc_probe.py HOST:PORT [--token T] [--house H] [--service NAME]... [--timeout S]
                     [--reflection auto|v1|v1alpha]
"""

import argparse
import json
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

# grpc.reflection.v1 and v1alpha carry the same messages under different package names, so
# the v1alpha message classes serialise v1 requests and parse v1 responses byte for byte.
REFLECTION_METHODS = [
    ("v1", "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
    ("v1alpha", "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"),
]


def rpc_error(e: grpc.RpcError) -> dict:
    return {"error": e.code().name, "details": e.details()}


def check(stub, service: str, metadata, timeout: float):
    try:
        resp = stub.Check(health_pb2.HealthCheckRequest(service=service), metadata=metadata, timeout=timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
    except grpc.RpcError as e:
        return rpc_error(e)


def list_services(channel, metadata, timeout: float, only: str) -> dict:
    last = None
    for version, method in REFLECTION_METHODS:
        if only not in ("auto", version):
            continue
        call = channel.stream_stream(
            method,
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        try:
            responses = call(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), metadata=metadata, timeout=timeout)
            for resp in responses:
                if resp.HasField("error_response"):
                    return {"version": version, "error": resp.error_response.error_message}
                names = sorted(s.name for s in resp.list_services_response.service)
                return {"version": version, "services": names}
            return {"version": version, "error": "no response"}
        except grpc.RpcError as e:
            last = dict(rpc_error(e), version=version)
            if e.code() != grpc.StatusCode.UNIMPLEMENTED:
                return last
    return last or {"error": "no reflection"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("target")
    p.add_argument("--token", default="")
    p.add_argument("--house", default="")
    p.add_argument("--service", action="append", default=[])
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--reflection", choices=["auto", "v1", "v1alpha"], default="auto",
                   help="reflection version to ask (auto: v1, then v1alpha when UNIMPLEMENTED)")
    a = p.parse_args()

    metadata = []
    if a.token:
        metadata.append(("authorization", f"Bearer {a.token}"))
    if a.house:
        metadata.append(("x-uw-house", a.house))

    with grpc.insecure_channel(a.target) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=a.timeout)
        except grpc.FutureTimeoutError:
            print(json.dumps({"target": a.target, "error": "channel not ready"}))
            return 0
        stub = health_pb2_grpc.HealthStub(channel)
        report = {"target": a.target, "overall": check(stub, "", metadata, a.timeout)}
        report["reflection"] = list_services(channel, metadata, a.timeout, a.reflection)
        names = set(a.service) | set(report["reflection"].get("services", []))
        report["services"] = {n: check(stub, n, metadata, a.timeout) for n in sorted(names)}
    print(json.dumps(report, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
