"""A stand-in `weaviate-server` whose gRPC port opens late, as a real node's does after a restart.

Run as the binary `teambot services` would start (`--host H --port P --scheme http`, GRPC_PORT in
the environment): REST answers at once (`/v1/.well-known/live` and `ready` 200, `/v1/nodes` lists
every cluster node HEALTHY); the gRPC health service serves only once the file named by
LATE_GRPC_GATE exists, so a test decides when the second port opens.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
from weaviate.proto.v1 import health_weaviate_pb2

WeaviateHealthCheckRequest = health_weaviate_pb2.WeaviateHealthCheckRequest
WeaviateHealthCheckResponse = health_weaviate_pb2.WeaviateHealthCheckResponse


class Rest(BaseHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/v1/nodes"):
            nodes = [{"name": f"weaviate-{i}", "status": "HEALTHY"} for i in range(9)]
            body = json.dumps({"nodes": nodes}).encode()
        elif self.path in ("/v1/.well-known/live", "/v1/.well-known/ready"):
            body = b"{}"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve_grpc(port: int) -> grpc.Server:
    def check(_request, _context):
        return WeaviateHealthCheckResponse(status=WeaviateHealthCheckResponse.SERVING)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
        "Check": grpc.unary_unary_rpc_method_handler(
            check, request_deserializer=WeaviateHealthCheckRequest.FromString,
            response_serializer=WeaviateHealthCheckResponse.SerializeToString,
        ),
    })])
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--scheme", default="http")
    args = parser.parse_args()
    rest = ThreadingHTTPServer((args.host, args.port), Rest)
    threading.Thread(target=rest.serve_forever, daemon=True).start()
    gate = Path(os.environ["LATE_GRPC_GATE"])
    while not gate.exists():  # the test's cue, polled as a server polls its own start-up
        time.sleep(0.05)
    serve_grpc(int(os.environ["GRPC_PORT"])).wait_for_termination()


if __name__ == "__main__":
    main()
