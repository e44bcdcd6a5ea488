#!/usr/bin/python3
"""Raw HTTP/2 client for connection_limits_test: does what a well-behaved gRPC client
never does (never reads its responses, opens more streams than the server allows,
sends half a request, stays silent) and prints what the server did as one JSON line on stdout.

Frames are written with hyperframe/hpack (Debian python3-h2's dependencies) rather than
h2's state machine, which would refuse to break the protocol's limits.

  h2_probe.py flood PORT STREAMS HOLD_S    STREAMS InferBatch calls at once, receive
                                           window 0; the connection is held HOLD_S
  h2_probe.py half-sent PORT SURVIVE_S     Health/Watch + a half-sent InferBatch
  h2_probe.py pings PORT INTERVAL_S COUNT  COUNT pings INTERVAL_S apart, no calls
  h2_probe.py idle PORT                    a connection with no calls: wait for GOAWAY
  h2_probe.py silent PORT                  TCP connect, send nothing: wait for close
"""
import json
import os
import socket
import sys
import time

import hpack
from hyperframe.frame import (DataFrame, Frame, GoAwayFrame, HeadersFrame, PingFrame,
                              RstStreamFrame, SettingsFrame)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
WAIT_S = 10.0  # upper bound for any single expected event
DEBUG = bool(os.environ.get("H2_PROBE_DEBUG"))


def grpc_message(payload=b"", declared=None):
    """gRPC length-prefixed message; `declared` may claim more bytes than follow."""
    length = len(payload) if declared is None else declared
    return b"\x00" + length.to_bytes(4, "big") + payload


def header(frame, name):
    for key, value in frame.decoded:
        key = key.decode() if isinstance(key, bytes) else key
        if key == name:
            return value.decode() if isinstance(value, bytes) else value
    return None


class Closed(Exception):
    pass


class Conn:
    def __init__(self, port, window=65535):
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.buf = b""
        self.server_settings = {}
        self.sock.sendall(PREFACE + SettingsFrame(
            0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: window}).serialize())
        # The server's limits apply once we acknowledged them and it acknowledged ours.
        got_settings = got_ack = False
        end = time.monotonic() + WAIT_S
        while not (got_settings and got_ack):
            frame = self.read(end - time.monotonic())
            if frame is None:
                raise SystemExit("no SETTINGS exchange with the server")
            if isinstance(frame, SettingsFrame):
                if "ACK" in frame.flags:
                    got_ack = True
                else:
                    self.server_settings = dict(frame.settings)
                    self.send(SettingsFrame(0, flags=["ACK"]))
                    got_settings = True

    def send(self, frame):
        self.sock.sendall(frame.serialize())

    def request(self, stream_id, path, body, end_stream=True):
        headers = [(":method", "POST"), (":scheme", "http"), (":path", path),
                   (":authority", "127.0.0.1:%d" % self.port),
                   ("content-type", "application/grpc"), ("te", "trailers")]
        self.send(HeadersFrame(stream_id, data=self.encoder.encode(headers),
                               flags=["END_HEADERS"]))
        self.send(DataFrame(stream_id, data=body, flags=["END_STREAM"] if end_stream else []))

    def _fill(self, n, timeout):
        while len(self.buf) < n:
            if timeout <= 0:
                return False
            self.sock.settimeout(timeout)
            start = time.monotonic()
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return False
            except OSError as e:
                raise Closed(str(e))
            if not chunk:
                raise Closed("EOF")
            self.buf += chunk
            timeout -= time.monotonic() - start
        return True

    def read(self, timeout):
        """The next frame, or None when none arrives within `timeout` seconds."""
        end = time.monotonic() + max(0.0, timeout)
        if not self._fill(9, end - time.monotonic()):
            return None
        frame, length = Frame.parse_frame_header(memoryview(self.buf[:9]))
        if not self._fill(9 + length, max(WAIT_S, end - time.monotonic())):
            raise Closed("truncated frame")
        frame.parse_body(memoryview(self.buf[9:9 + length]))
        self.buf = self.buf[9 + length:]
        if isinstance(frame, HeadersFrame):
            frame.decoded = self.decoder.decode(frame.data)
        if DEBUG:
            sys.stderr.write("%.3f %r %s\n" % (time.monotonic(), frame, getattr(frame, "decoded", "")))
        if isinstance(frame, PingFrame) and "ACK" not in frame.flags:
            self.send(PingFrame(0, opaque_data=frame.opaque_data, flags=["ACK"]))
        return frame


def flood(port, streams, hold_s):
    conn = Conn(port, window=0)  # we never let the server send a byte of data
    ids = [1 + 2 * i for i in range(streams)]
    for sid in ids:
        conn.request(sid, "/inference.InferenceService/InferBatch", grpc_message())
    # admitted: the response started (HEADERS without END_STREAM), its data now waits
    # for a window we never open. failed: ended at once (trailers-only or RST_STREAM).
    admitted, failed = set(), {}
    result = {"closed": False, "goaway": None}
    end = time.monotonic() + WAIT_S
    try:
        while len(admitted) + len(failed) < streams:
            frame = conn.read(end - time.monotonic())
            if frame is None:
                break
            if isinstance(frame, HeadersFrame):
                if "END_STREAM" in frame.flags:
                    failed[frame.stream_id] = header(frame, "grpc-status")
                else:
                    admitted.add(frame.stream_id)
            elif isinstance(frame, RstStreamFrame) and frame.stream_id not in failed:
                failed[frame.stream_id] = "RST_STREAM %d" % frame.error_code
            elif isinstance(frame, GoAwayFrame):
                result["goaway"] = frame.error_code
    except Closed:
        result["closed"] = True
    result.update({
        "max_concurrent_streams": conn.server_settings.get(SettingsFrame.MAX_CONCURRENT_STREAMS),
        "admitted": len(admitted), "failed": len(failed),
        "failures": sorted(set(failed.values()))})
    print(json.dumps(result), flush=True)
    if result["closed"]:
        return
    # Keep the unread responses pinned while the test measures the server.
    end = time.monotonic() + hold_s
    while time.monotonic() < end:
        conn.read(end - time.monotonic())


def half_sent(port, survive_s):
    conn = Conn(port)
    conn.request(1, "/grpc.health.v1.Health/Watch", grpc_message())
    # Declares 1000 bytes, sends 4, then nothing: the request never completes.
    conn.request(3, "/inference.InferenceService/InferBatch",
                 grpc_message(b"\x0a\x02ab", declared=1000), end_stream=False)
    start = time.monotonic()
    result = {"half_ended": False, "half_end": "", "half_ended_after_s": None,
              "watch_messages": 0, "watch_ended": False, "goaway": False, "closed": False}

    def handle(frame):
        now = round(time.monotonic() - start, 3)
        if frame.stream_id == 3 and not result["half_ended"]:
            if isinstance(frame, RstStreamFrame):
                result.update(half_ended=True, half_end="RST_STREAM %d" % frame.error_code,
                              half_ended_after_s=now)
            elif isinstance(frame, HeadersFrame) and "END_STREAM" in frame.flags:
                status = header(frame, "grpc-status")
                result.update(half_ended=True, half_end="trailers grpc-status %s" % status,
                              half_ended_after_s=now)
        if frame.stream_id == 1:
            if isinstance(frame, DataFrame) and frame.data:
                result["watch_messages"] += 1
            if isinstance(frame, RstStreamFrame) or "END_STREAM" in getattr(frame, "flags", ()):
                result["watch_ended"] = True
        if isinstance(frame, GoAwayFrame):
            result["goaway"] = True

    try:
        end = start + WAIT_S
        while not result["half_ended"]:
            frame = conn.read(end - time.monotonic())
            if frame is None:
                break
            handle(frame)
        # The long-lived stream must outlive the read timeout by far.
        end = time.monotonic() + survive_s
        while time.monotonic() < end:
            frame = conn.read(end - time.monotonic())
            if frame is not None:
                handle(frame)
    except Closed:
        result["closed"] = True
    result["watch_alive_s"] = round(time.monotonic() - start, 3)
    print(json.dumps(result), flush=True)


def pings(port, interval_s, count):
    """`count` PINGs `interval_s` apart on a connection without calls."""
    conn = Conn(port)
    result = {"acks": 0, "goaway": None, "goaway_data": "", "closed": False}

    def drain(seconds):
        end = time.monotonic() + seconds
        while True:
            frame = conn.read(end - time.monotonic())
            if frame is None:
                return
            if isinstance(frame, PingFrame) and "ACK" in frame.flags:
                result["acks"] += 1
            elif isinstance(frame, GoAwayFrame):
                result["goaway"] = frame.error_code
                result["goaway_data"] = frame.additional_data.decode(errors="replace")

    try:
        for i in range(count):
            try:
                conn.send(PingFrame(0, opaque_data=b"probe%03d" % i))
            except (BrokenPipeError, ConnectionResetError):
                # The server already said GOAWAY and closed: read what it sent.
                result["closed"] = True
                drain(1.0)
                break
            drain(interval_s if i + 1 < count else 1.0)
    except Closed:
        result["closed"] = True
    print(json.dumps(result), flush=True)


def idle(port):
    conn = Conn(port)
    start = time.monotonic()
    result = {"goaway": False, "closed": False}
    try:
        end = start + WAIT_S
        while True:
            frame = conn.read(end - time.monotonic())
            if frame is None:
                break
            if isinstance(frame, GoAwayFrame):
                result.update(goaway=True, error_code=frame.error_code)
                break
    except Closed:
        result["closed"] = True
    result["after_s"] = round(time.monotonic() - start, 3)
    print(json.dumps(result), flush=True)


def silent(port):
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
    start = time.monotonic()
    closed = False
    try:
        while True:
            if not sock.recv(65536):
                closed = True
                break
    except socket.timeout:
        pass
    except OSError:
        closed = True
    print(json.dumps({"closed": closed, "after_s": round(time.monotonic() - start, 3)}),
          flush=True)


def main():
    cmd, port = sys.argv[1], int(sys.argv[2])
    if cmd == "flood":
        flood(port, int(sys.argv[3]), float(sys.argv[4]))
    elif cmd == "half-sent":
        half_sent(port, float(sys.argv[3]))
    elif cmd == "pings":
        pings(port, float(sys.argv[3]), int(sys.argv[4]))
    elif cmd == "idle":
        idle(port)
    elif cmd == "silent":
        silent(port)
    else:
        raise SystemExit("unknown command " + cmd)


if __name__ == "__main__":
    main()
