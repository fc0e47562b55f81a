#!/usr/bin/python3
"""External health client for the end-to-end tests.

Debian's python3-grpcio calls grpc.health.v1.Health/Check on poold and prints
the serving status, so at least one test talks to poold through a client that
shares no code with it.

Usage: health_check.py TARGET [SERVICE]
Prints the status name (for example SERVING) and exits 0 when the call
succeeds; prints the gRPC status code name (for example NOT_FOUND) and exits 1
when it fails. health_pb2 is generated from Debian's health.proto by the
build (PYTHONPATH points to it).
"""

import sys

import grpc
import health_pb2


def main(argv):
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    target = argv[1]
    service = argv[2] if len(argv) == 3 else ""
    with grpc.insecure_channel(target) as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        try:
            response = check(
                health_pb2.HealthCheckRequest(service=service), timeout=10
            )
        except grpc.RpcError as error:
            print(error.code().name)
            return 1
    print(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
