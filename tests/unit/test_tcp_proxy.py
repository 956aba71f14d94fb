"""The test proxy itself (tests/support/tcp_proxy.py), against a local echo server: forward, cut,
stall and restore do what the outage tests rely on, and close() leaves no thread behind."""

import socket
import threading
import time

import pytest

from tests.support.tcp_proxy import TcpProxy


@pytest.fixture
def echo_port():
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    stop = threading.Event()

    def serve(conn):
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data)

    def accept():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    yield listener.getsockname()[1]
    stop.set()
    acceptor.join(5)
    listener.close()


def connect(proxy: TcpProxy) -> socket.socket:
    client = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
    client.settimeout(0.5)
    return client


def echoes(client: socket.socket, data: bytes = b"ping") -> bool:
    client.sendall(data)
    try:
        return client.recv(100) == data
    except TimeoutError:
        return False


def test_forward_cut_stall_restore(echo_port):
    with TcpProxy("127.0.0.1", echo_port) as proxy:
        before = connect(proxy)
        assert echoes(before)

        proxy.cut()  # open connections end, new ones are closed at once
        assert before.recv(100) == b""
        refused = connect(proxy)
        assert refused.recv(100) == b""

        proxy.restore()
        open_one = connect(proxy)
        assert echoes(open_one)

        proxy.stall()  # open and new connections stay open, and nothing comes back
        assert not echoes(open_one, b"held")
        hanging = connect(proxy)
        assert not echoes(hanging, b"new")

        proxy.restore()  # what was held is delivered
        open_one.settimeout(2)
        hanging.settimeout(2)
        assert open_one.recv(100) == b"held"
        assert hanging.recv(100) == b"new"
        for sock in (before, refused, open_one, hanging):
            sock.close()


def test_close_ends_every_connection_and_thread(echo_port):
    proxy = TcpProxy("127.0.0.1", echo_port, max_connections=3)
    clients = [connect(proxy) for _ in range(5)]
    assert sum(echoes(client) for client in clients) == 3  # connections beyond the bound are closed
    proxy.stall()
    assert proxy.thread_count() <= 1 + 2 * 3
    proxy.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(t.name.startswith("tcp-proxy") for t in threading.enumerate()):
        time.sleep(0.05)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("tcp-proxy")]
    for client in clients:
        client.close()
