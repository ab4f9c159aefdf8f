"""The e2e tests' gRPC client (grpcio from the repo's .venv), for `detour.e2e.Echo`
(server.py) through an Envoy ingress, in plaintext HTTP/2 with the service's authority.

    client.py --target ADDR --authority foo.apps unary --id X [--status NAME --message M]
    client.py ... stream --id X --count N --size B
    client.py ... load --seconds S --concurrency C --out FILE

unary and stream print one JSON object: the status code's name, details, initial and
trailing metadata, and the messages. load makes unary calls from C threads for S
seconds, each with its own id (also sent as `x-test-id`), and appends one JSON line per
finished call to FILE as it finishes, so a test can watch the load while it runs.
"""

import argparse
import json
import threading
import time

import grpc

SERVICE = "detour.e2e.Echo"
TIMEOUT_S = 10


def channel(args):
    return grpc.insecure_channel(args.target, options=(
        ("grpc.default_authority", args.authority),
        # The tests' machines may have a proxy in the environment; Envoy is local.
        ("grpc.enable_http_proxy", 0),
    ))


def unary(stub_channel, ask, test_id):
    call = stub_channel.unary_unary(f"/{SERVICE}/Unary")
    started = time.monotonic()
    try:
        answer, rpc = call.with_call(json.dumps(ask).encode(), timeout=TIMEOUT_S,
                                     metadata=(("x-test-id", test_id),))
        messages = [answer.decode()]
    except grpc.RpcError as error:
        rpc, messages = error, []
    return {
        "id": test_id,
        "code": rpc.code().name,
        "details": rpc.details() or "",
        "initial": dict(rpc.initial_metadata() or ()),
        "trailing": dict(rpc.trailing_metadata() or ()),
        "messages": messages,
        "ms": round((time.monotonic() - started) * 1000, 1),
    }


def stream(stub_channel, ask, test_id):
    call = stub_channel.unary_stream(f"/{SERVICE}/Stream")
    responses = call(json.dumps(ask).encode(), timeout=TIMEOUT_S,
                     metadata=(("x-test-id", test_id),))
    messages = []
    try:
        for message in responses:
            messages.append(message.decode())
    except grpc.RpcError:
        pass
    return {
        "id": test_id,
        "code": responses.code().name,
        "details": responses.details() or "",
        "initial": dict(responses.initial_metadata() or ()),
        "trailing": dict(responses.trailing_metadata() or ()),
        "messages": messages,
    }


def load(stub_channel, args):
    deadline = time.monotonic() + args.seconds
    lock = threading.Lock()
    with open(args.out, "a") as out:
        def worker(k):
            n = 0
            while time.monotonic() < deadline:
                test_id = f"load-{k}-{n}"
                n += 1
                result = unary(stub_channel, {"id": test_id}, test_id)
                with lock:
                    out.write(json.dumps(result) + "\n")
                    out.flush()
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(args.concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--authority", required=True)
    sub = parser.add_subparsers(dest="command", required=True)
    u = sub.add_parser("unary")
    u.add_argument("--id", required=True)
    u.add_argument("--status")
    u.add_argument("--message", default="")
    s = sub.add_parser("stream")
    s.add_argument("--id", required=True)
    s.add_argument("--count", type=int, default=1)
    s.add_argument("--size", type=int, default=0)
    lo = sub.add_parser("load")
    lo.add_argument("--seconds", type=float, required=True)
    lo.add_argument("--concurrency", type=int, required=True)
    lo.add_argument("--out", required=True)
    args = parser.parse_args()

    ch = channel(args)
    if args.command == "unary":
        ask = {"id": args.id}
        if args.status:
            ask.update(status=args.status, message=args.message)
        print(json.dumps(unary(ch, ask, args.id)))
    elif args.command == "stream":
        ask = {"id": args.id, "count": args.count, "size": args.size}
        print(json.dumps(stream(ch, ask, args.id)))
    else:
        load(ch, args)


if __name__ == "__main__":
    main()
