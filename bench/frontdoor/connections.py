#!/usr/bin/env python3
"""The front door's HTTP connection handling, measured against a strata-scheduler process (no workers:
GET /v1/models and /healthz are answered by the front door alone).

For each binary given (the baseline first, then the change, in the same run):
  keep-alive   per-request latency of 200 sequential GET /v1/models on one kept-alive connection (p50, p99;
               the first request apart), and how many the server served before closing the connection
  burst        500 connections opened at once, each sending GET /healthz: answered 200, 503, or lost
               (reset, refused or closed without an answer)
  slow heads   1000 connections sending one header byte a second from 127.0.0.2-5 (250 each), then GET /healthz from
               127.0.0.1: its latency (or 'timeout' past 30 s)

usage: bench/frontdoor/connections.py BASELINE_SCHEDULER [CHANGED_SCHEDULER ...]
"""
import os
import resource
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = os.path.join(HERE, "..", "..", "tests", "data", "models", "llama3-tiny")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(binary, port):
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen([binary, "serve", "--grpc-address", "127.0.0.1:0", "--metrics-host", "127.0.0.1",
                             "--metrics-port", "0", "--http-host", "127.0.0.1", "--http-port", str(port),
                             "--model-dir", MODEL, "--served-model-name", "tiny"],
                            stdout=log, stderr=log)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("scheduler did not start")


def read_response(sock, buffer):
    """Reads one response (Content-Length bodies) from sock; returns (status, rest of buffer)."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            return None, b""
        buffer += chunk
    head, rest = buffer.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return None, b""
        rest += chunk
    return int(head[9:12]), rest[length:]


def keep_alive(port, count=200):
    sock = socket.create_connection(("127.0.0.1", port))
    times, served, buffer = [], 0, b""
    for _ in range(count):
        start = time.perf_counter()
        try:
            sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
            status, buffer = read_response(sock, buffer)
        except OSError:
            status = None
        if status is None:  # the server closed the connection: continue on a new one
            sock.close()
            sock = socket.create_connection(("127.0.0.1", port))
            buffer = b""
            continue
        times.append((time.perf_counter() - start) * 1e3)
        served += 1
    sock.close()
    return times, served


def served_per_connection(port, count=50):
    sock = socket.create_connection(("127.0.0.1", port))
    buffer = b""
    for i in range(count):
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            status, buffer = read_response(sock, buffer)
        except OSError:
            status = None
        if status is None:
            sock.close()
            return i
    sock.close()
    return count


def listen_overflows():
    """The kernel's TcpExt ListenOverflows (connections dropped because an accept queue was full)."""
    with open("/proc/net/netstat") as f:
        lines = [line.split() for line in f if line.startswith("TcpExt:")]
    return int(lines[1][lines[0].index("ListenOverflows")])


def burst(port, count=500):
    """Opens `count` connections at once (non-blocking connects in a tight loop), sends GET /healthz on
    each, reads each answer to EOF (up to 30 s)."""
    results = {"200": 0, "503": 0, "other": 0, "reset": 0, "no answer": 0}
    conns = {}
    for _ in range(count):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        except OSError:
            results["reset"] += 1
            s.close()
            continue
        conns[s.fileno()] = [s, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b""]
    poller = select.poll()
    for fd in conns:
        poller.register(fd, select.POLLOUT)
    deadline = time.time() + 30
    while conns and time.time() < deadline:
        for fd, _ in poller.poll(100):
            s, request, response = conns[fd]
            try:
                if request:
                    sent = s.send(request)
                    conns[fd][1] = request[sent:]
                    if not conns[fd][1]:
                        poller.modify(fd, select.POLLIN)
                    continue
                chunk = s.recv(65536)
                if chunk:
                    conns[fd][2] += chunk
                    continue
                status = response[9:12].decode() if response.startswith(b"HTTP/1.1 ") else ""
                results[status if status in ("200", "503") else "other"] += 1
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                results["reset"] += 1
            poller.unregister(fd)
            s.close()
            del conns[fd]
    results["no answer"] += len(conns)
    for s, _, _ in conns.values():
        s.close()
    return results


def slow_heads(port, count):
    slow = []
    for i in range(count):
        s = socket.socket()
        s.bind((f"127.0.0.{2 + i % 4}", 0))
        try:
            s.connect(("127.0.0.1", port))
            slow.append(s)
        except OSError:
            s.close()
    stop = threading.Event()

    def trickle():
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
        i = 0
        while not stop.is_set():
            for s in list(slow):
                try:
                    s.send(head[i % len(head):i % len(head) + 1])
                except OSError:
                    pass
            i += 1
            stop.wait(1)

    trickler = threading.Thread(target=trickle)
    trickler.start()
    time.sleep(2)
    start = time.perf_counter()
    answer = "timeout"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            status, _ = read_response(s, b"")
            answer = f"{status} in {(time.perf_counter() - start) * 1e3:.1f} ms"
    except OSError as error:
        answer = f"{type(error).__name__} after {(time.perf_counter() - start):.1f} s"
    stop.set()
    trickler.join()
    for s in slow:
        s.close()
    return answer


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    for binary in sys.argv[1:]:
        port = free_port()
        proc = start(binary, port)
        try:
            times, served = keep_alive(port)
            first, rest = times[0], sorted(times[1:])
            p99 = rest[int(0.99 * (len(rest) - 1))]
            print(f"{binary}")
            print(f"  keep-alive GET /v1/models x{len(times)}: first {first:.2f} ms, then p50 "
                  f"{statistics.median(rest):.2f} ms p99 {p99:.2f} ms")
            print(f"  requests served on one connection before the server closed it (of 50): "
                  f"{served_per_connection(port)}")
            overflows = listen_overflows()
            outcome = burst(port)
            print(f"  burst of 500 connections: {outcome}, listen overflows (whole host) "
                  f"{listen_overflows() - overflows}")
            print(f"  GET /healthz with 1000 slow-header connections open: {slow_heads(port, 1000)}")
        finally:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
