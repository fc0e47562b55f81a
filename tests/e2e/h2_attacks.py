#!/usr/bin/python3
"""Hostile and careless HTTP/2 clients of poold, for the end-to-end tests of
its transport limits. Speaks HTTP/2 directly (Debian's python3-h2), so it can
do what a gRPC library never does:

  unread-reads TARGET HANDLE COUNT DONE_FILE
      Opens one connection whose streams get no flow-control window, sends
      COUNT Read requests of HANDLE and never reads a response body. Prints
      "sent COUNT", then "status CODE" for each call that ends without a
      body (a refusal), and keeps the connection open until DONE_FILE
      exists.
  rapid-reset TARGET COUNT
      Opens COUNT streams on one connection, each sending a GetStats request
      and then resetting it at once. Prints "reset N" and how the
      connection ended.
  big-headers TARGET BYTES ack|noack
      Sends one GetStats call whose header block carries BYTES of metadata
      (in CONTINUATION frames), after acknowledging poold's SETTINGS or at
      once, and prints how poold answered.

TARGET is host:port or unix:PATH.
"""

import os
import socket
import struct
import sys

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

SERVICE = "/poold.v1.PoolService/"


def connect(target):
    if target.startswith("unix:"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(target[len("unix:"):])
    else:
        host, port = target.rsplit(":", 1)
        sock = socket.create_connection((host.strip("[]"), int(port)))
    conn = h2.connection.H2Connection(
        config=h2.config.H2Configuration(client_side=True,
                                         header_encoding="utf-8"))
    return sock, conn


def headers(method, extra=()):
    return [(":method", "POST"), (":scheme", "http"),
            (":path", SERVICE + method), (":authority", "poold"),
            ("content-type", "application/grpc"), ("te", "trailers")
            ] + list(extra)


def varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def grpc_message(payload):
    return b"\x00" + struct.pack(">I", len(payload)) + payload


def read_request(handle):
    # poold.v1.ReadRequest{handle = HANDLE}: field 1, varint.
    return grpc_message(b"\x08" + varint(handle))


def flush(sock, conn):
    data = conn.data_to_send()
    if data:
        sock.sendall(data)


def unread_reads(target, handle, count, done_file):
    sock, conn = connect(target)
    conn.initiate_connection()
    # No window for any stream: poold can send headers and trailers, never
    # a response body.
    conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
    flush(sock, conn)
    sent = 0
    open_streams = set()
    sock.settimeout(0.05)
    while True:
        # Within poold's stream limit: the rest wait, as a client's library
        # would make them.
        while (sent < count and
               len(open_streams) < conn.remote_settings.max_concurrent_streams):
            stream = conn.get_next_available_stream_id()
            conn.send_headers(stream, headers("Read"))
            conn.send_data(stream, read_request(handle), end_stream=True)
            open_streams.add(stream)
            sent += 1
            if sent == count:
                print("sent", count, flush=True)
        flush(sock, conn)
        if os.path.exists(done_file):
            break
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        if not data:
            print("closed by poold", flush=True)
            return
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                status = dict(event.headers).get("grpc-status")
                if status is not None:  # trailers only: no body
                    print("status", status, flush=True)
            if isinstance(event, h2.events.StreamEnded):
                open_streams.discard(event.stream_id)
            if isinstance(event, h2.events.StreamReset):
                open_streams.discard(event.stream_id)
        flush(sock, conn)
    conn.close_connection()
    flush(sock, conn)
    sock.close()


def rapid_reset(target, count):
    sock, conn = connect(target)
    conn.initiate_connection()
    flush(sock, conn)
    body = grpc_message(b"")
    reset = 0
    ended = "still open"
    try:
        for _ in range(count):
            stream = conn.get_next_available_stream_id()
            conn.send_headers(stream, headers("GetStats"))
            conn.send_data(stream, body, end_stream=True)
            conn.reset_stream(stream, error_code=8)  # CANCEL
            reset += 1
            if reset % 100 == 0:
                flush(sock, conn)
                sock.setblocking(False)
                try:
                    data = sock.recv(1 << 20)
                    if not data:
                        ended = "closed by poold"
                        break
                    for event in conn.receive_data(data):
                        if isinstance(event, h2.events.ConnectionTerminated):
                            ended = "GOAWAY %s" % event.error_code
                except BlockingIOError:
                    pass
                finally:
                    sock.setblocking(True)
                flush(sock, conn)
                if ended != "still open":
                    break
        flush(sock, conn)
    except (OSError, h2.exceptions.ProtocolError) as error:
        ended = "error %s" % error
    print("reset", reset, ended, flush=True)
    sock.close()


def big_headers(target, size, ack_settings):
    sock, conn = connect(target)
    conn.initiate_connection()
    flush(sock, conn)
    if ack_settings:
        # A client that first takes poold's SETTINGS (and acknowledges them,
        # as h2 does on receipt), as a gRPC library does.
        # A PING after the ACK: poold reads frames in order, so its answer
        # means the ACK was taken.
        sock.settimeout(10)
        pinged = False
        ponged = False
        while not ponged:
            for event in conn.receive_data(sock.recv(65536)):
                if (isinstance(event, h2.events.RemoteSettingsChanged) and
                        not pinged):
                    conn.ping(b"settings")
                    pinged = True
                elif isinstance(event, h2.events.PingAckReceived):
                    ponged = True
            flush(sock, conn)
    # Many headers of 4 KiB each, as a client would carry bulky metadata.
    extra = [("x-pad-%d" % i, "x" * 4096) for i in range(max(1, size // 4096))]
    stream = conn.get_next_available_stream_id()
    try:
        conn.send_headers(stream, headers("GetStats", extra))
        conn.send_data(stream, grpc_message(b""), end_stream=True)
        flush(sock, conn)
    except OSError as error:
        print("send failed:", error, flush=True)
        return
    sock.settimeout(10)
    outcome = "no answer"
    try:
        while outcome == "no answer":
            data = sock.recv(65536)
            if not data:
                outcome = "closed by poold"
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.StreamReset):
                    outcome = "RST_STREAM %s" % event.error_code
                elif isinstance(event, h2.events.ConnectionTerminated):
                    outcome = "GOAWAY %s" % event.error_code
                elif isinstance(event, (h2.events.ResponseReceived,
                                        h2.events.TrailersReceived)):
                    status = dict(event.headers).get("grpc-status")
                    if status is not None:
                        outcome = "grpc-status %s %s" % (
                            status, dict(event.headers).get("grpc-message", ""))
            flush(sock, conn)
    except (OSError, h2.exceptions.ProtocolError) as error:
        outcome = "error %s" % error
    print(outcome, flush=True)
    sock.close()


def main(argv):
    if len(argv) >= 5 and argv[1] == "unread-reads":
        unread_reads(argv[2], int(argv[3]), int(argv[4]), argv[5])
    elif len(argv) == 4 and argv[1] == "rapid-reset":
        rapid_reset(argv[2], int(argv[3]))
    elif len(argv) == 5 and argv[1] == "big-headers":
        big_headers(argv[2], int(argv[3]), argv[4] == "ack")
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
