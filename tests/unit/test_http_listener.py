"""The HTTP listener's socket: what asyncio needs to set TCP_NODELAY on every connection."""

import socket

from service.http.app import _bound_socket


def test_the_listening_socket_says_tcp_so_that_connections_get_nodelay():
    # asyncio turns Nagle off only on connections whose socket's proto is IPPROTO_TCP; with proto 0
    # a keep-alive answer written in two parts waited for the client's delayed ACK (40 ms).
    sock = _bound_socket("127.0.0.1", 0, reuse_port=False)
    try:
        assert sock.proto == socket.IPPROTO_TCP
        client = socket.create_connection(sock.getsockname(), timeout=5)
        accepted, _ = sock.accept()
        with client, accepted:
            assert accepted.proto == socket.IPPROTO_TCP
    finally:
        sock.close()
