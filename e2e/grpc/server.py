"""A member cluster's gRPC service for detour's e2e tests (grpcio from the repo's .venv).

    server.py --cluster east --listen 127.0.1.10:PORT --record FILE

The service `detour.e2e.Echo` has no .proto: its messages are JSON in raw bytes, served
through grpcio's generic handlers. Like the HTTP upstream (e2e/src/bin/upstream.rs), it
appends one JSON line per call to FILE before answering, in the harness's Record shape,
so a test counts deliveries even after this process is SIGKILLed.

- Unary: answers {"cluster", "id"}; sends `x-served-by` as initial and trailing
  metadata and `x-echo-id` as trailing metadata; with "status": "NOT_FOUND" (any
  grpc.StatusCode name) and "message", ends with that status and message instead.
- Stream: answers "count" messages {"cluster", "id", "seq"}, each padded to "size" bytes.
- grpc.health.v1: the whole server ("") SERVING.
"""

import argparse
import json
import os
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SERVICE = "detour.e2e.Echo"


class Recorder:
    def __init__(self, path):
        # O_APPEND and one write per line: records survive SIGKILL whole.
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.lock = threading.Lock()

    def record(self, method, request, context):
        metadata = dict(context.invocation_metadata())
        line = json.dumps({
            "method": "POST",
            "path": f"/{SERVICE}/{method}",
            "testId": metadata.get("x-test-id"),
            "via": metadata.get("x-detour-via"),
            "bodyBytes": len(request),
        }) + "\n"
        with self.lock:
            os.write(self.fd, line.encode())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cluster", required=True)
    parser.add_argument("--listen", required=True)
    parser.add_argument("--record", required=True)
    args = parser.parse_args()
    recorder = Recorder(args.record)
    cluster = args.cluster

    def unary(request, context):
        recorder.record("Unary", request, context)
        ask = json.loads(request or b"{}")
        context.send_initial_metadata((("x-served-by", cluster),))
        context.set_trailing_metadata((
            ("x-served-by", cluster),
            ("x-echo-id", str(ask.get("id", ""))),
        ))
        status = ask.get("status")
        if status:
            context.set_code(grpc.StatusCode[status])
            context.set_details(ask.get("message", ""))
            return b""
        return json.dumps({"cluster": cluster, "id": ask.get("id")}).encode()

    def stream(request, context):
        recorder.record("Stream", request, context)
        ask = json.loads(request or b"{}")
        context.send_initial_metadata((("x-served-by", cluster),))
        context.set_trailing_metadata((("x-served-by", cluster),))
        size = int(ask.get("size", 0))
        for seq in range(int(ask.get("count", 1))):
            message = json.dumps({"cluster": cluster, "id": ask.get("id"), "seq": seq})
            yield message.ljust(size).encode()

    handler = grpc.method_handlers_generic_handler(SERVICE, {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    server.add_generic_rpc_handlers((handler,))
    checks = health.HealthServicer()
    checks.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    if server.add_insecure_port(args.listen) == 0:
        raise SystemExit(f"cannot listen on {args.listen}")
    server.start()
    print(f"grpc {SERVICE} of {cluster} listening on {args.listen}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
