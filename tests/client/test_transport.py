"""How parts travel: ``os.sendfile`` to plain-HTTP S3, requests otherwise; the same bytes and faults either way."""

from __future__ import annotations

import hashlib
import os
import select
import socket

import pytest
import requests

from oarepo_s3_client import FileChanged
from oarepo_s3_client.s3http import PartTransport, new_s3_session
from oarepo_s3_client.sendfile_put import ConnectionPool

from .conftest import MiB, OnFirstBytes

BOTH_PATHS = pytest.mark.parametrize("zero_copy", [True, False], ids=["sendfile", "requests"])


@pytest.fixture()
def sendfile_calls(monkeypatch):
    """Counts ``os.sendfile`` calls (the real one still runs)."""
    calls = []
    real = os.sendfile

    def counting(*args):
        calls.append(args[3])
        return real(*args)

    monkeypatch.setattr(os, "sendfile", counting)
    return calls


@BOTH_PATHS
def test_both_paths_send_the_file_with_content_length(make_uploader, make_file, proxy, owner, sendfile_calls,
                                                      zero_copy):
    path = make_file("paths.bin", 3 * 5 * MiB + 77)
    uploader = make_uploader(config_kwargs={"zero_copy": zero_copy})
    result = uploader.upload(path)

    assert uploader.transport.uses_sendfile(proxy.url + "/bucket/key") is zero_copy
    assert bool(sendfile_calls) is zero_copy  # the kernel sent the bytes, or requests did
    puts = sorted(proxy.part_puts(), key=lambda e: e.part)
    assert [e.headers["Content-Length"] for e in puts] == [str(5 * MiB)] * 3 + ["77"]
    assert not any("Transfer-Encoding" in e.headers for e in puts)
    assert len({e.headers.get("Host") for e in puts}) == 1
    got = owner.api().get(result.content_url, timeout=60).content
    assert hashlib.sha256(got).digest() == hashlib.sha256(path.read_bytes()).digest()


def test_sendfile_connections_are_kept_alive(make_uploader, make_file, proxy, monkeypatch):
    """One worker sends six parts over one kept-alive connection, not a new one per part."""
    opened = []
    real = ConnectionPool.get

    def counting(pool, address):
        connection = real(pool, address)
        opened.append(connection)
        return connection

    monkeypatch.setattr(ConnectionPool, "get", counting)
    path = make_file("alive.bin", 6 * 5 * MiB)
    make_uploader(concurrency=1).upload(path)
    assert len(opened) == 6 and len({id(c) for c in opened}) == 1


@BOTH_PATHS
def test_both_paths_retry_drops_damage_and_503_and_resign_refusals(make_uploader, make_file, proxy, owner,
                                                                   zero_copy):
    path = make_file("faults.bin", 6 * 5 * MiB)
    proxy.add_fault("drop", part=1)
    proxy.add_fault("corrupt", part=2)
    proxy.add_fault("error503", part=3)
    proxy.add_fault("expire", part=4)
    proxy.add_fault("refuse_early", part=5)
    uploader = make_uploader(config_kwargs={"zero_copy": zero_copy})
    result = uploader.upload(path)

    by_part: dict[int, list] = {}
    for e in proxy.part_puts():
        by_part.setdefault(e.part, []).append(e.action)
    assert by_part == {1: ["drop", "forward"], 2: ["corrupt", "forward"], 3: ["error503", "forward"],
                       4: ["expire", "forward"], 5: ["refuse_early", "forward"], 6: ["forward"]}
    assert result.parts_sent == 6
    assert owner.api().get(result.content_url, timeout=60).content == path.read_bytes()


@BOTH_PATHS
def test_file_cut_short_while_sending_is_a_file_change(make_uploader, make_file, proxy, zero_copy):
    """The file loses its tail after the parts were hashed: the part that reaches past the end is refused."""
    path = make_file("shrinks.bin", 3 * 5 * MiB)
    uploader = make_uploader(concurrency=1, subscribers=[OnFirstBytes(lambda: os.truncate(path, 2 * 5 * MiB + 100))],
                             config_kwargs={"zero_copy": zero_copy})
    with pytest.raises(FileChanged, match="part 3 changed"):
        uploader.upload(path)
    proxy.wait_idle()  # the proxy may still be reading the abandoned request when the client gives up
    assert all(e.part != 3 or e.status == -1 for e in proxy.part_puts())  # never a whole part 3


def test_sendfile_only_where_no_tls_no_proxy_and_no_injected_session(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy",
                 "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    transport = PartTransport(new_s3_session(2), zero_copy=True, pool_size=2, connect_timeout=1, read_timeout=1)
    assert transport.uses_sendfile("http://s3.example.org:9000/bucket/key?partNumber=1")
    assert not transport.uses_sendfile("https://s3.example.org/bucket/key?partNumber=1")  # TLS: user space
    off = PartTransport(new_s3_session(2), zero_copy=False, pool_size=2, connect_timeout=1, read_timeout=1)
    assert not off.uses_sendfile("http://s3.example.org:9000/bucket/key")

    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example.org:3128")
    monkeypatch.setenv("NO_PROXY", "direct.example.org")
    proxied = PartTransport(new_s3_session(2), zero_copy=True, pool_size=2, connect_timeout=1, read_timeout=1)
    assert not proxied.uses_sendfile("http://s3.example.org:9000/bucket/key")  # the proxy must see the request
    assert proxied.uses_sendfile("http://direct.example.org:9000/bucket/key")
    untrusting = requests.Session()
    untrusting.trust_env = False
    ignoring = PartTransport(untrusting, zero_copy=True, pool_size=2, connect_timeout=1, read_timeout=1)
    assert ignoring.uses_sendfile("http://s3.example.org:9000/bucket/key")


def test_injected_s3_session_is_always_used(draft_url, owner):
    from oarepo_s3_client import Uploader

    with Uploader(draft_url, owner.token, s3_session=requests.Session()) as uploader:
        assert not uploader.transport.uses_sendfile("http://127.0.0.1:1/bucket/key")


def test_pool_replaces_a_connection_the_server_closed_while_idle():
    with socket.create_server(("127.0.0.1", 0)) as server:
        pool = ConnectionPool(2, connect_timeout=2, read_timeout=2)
        address = server.getsockname()[:2]
        first = pool.get(address)
        accepted, _ = server.accept()
        pool.put_back(address, first)
        assert pool.get(address) is first  # alive: reused
        pool.put_back(address, first)
        accepted.close()  # the server's idle timeout
        assert select.select([first.sock], [], [], 5)[0]  # the FIN arrived
        second = pool.get(address)
        assert second is not first and first.sock is None  # closed, not handed out
        pool.put_back(address, second)
        pool.close()


def test_an_answer_before_the_body_is_read_is_returned_not_a_reset(tmp_path):
    """S3 may refuse a part from its headers, answer and close while the body is still coming (AWS does so
    with an expired URL): the sender reads that answer instead of reporting the reset."""
    import threading

    from oarepo_s3_client.sendfile_put import SendfilePut

    refusal = (b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nContent-Length: 63\r\n"
               b"Connection: close\r\n\r\n<Error><Code>AccessDenied</Code><Message>expired</Message></Error>")
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(32 * MiB))  # more than both ends' socket buffers hold

    with socket.create_server(("127.0.0.1", 0)) as server:
        def refuse_early():
            connection, _ = server.accept()
            with connection:
                head = b""
                while b"\r\n\r\n" not in head:
                    head += connection.recv(65536)
                connection.sendall(refusal)
            # closed with most of the body unread: the kernel resets the connection

        threading.Thread(target=refuse_early, daemon=True).start()
        put = SendfilePut(pool_size=1, connect_timeout=5, read_timeout=10)
        with open(path, "rb") as fp:
            answer = put.put(f"http://127.0.0.1:{server.getsockname()[1]}/bucket/key?partNumber=1", {},
                             fp.fileno(), 0, 32 * MiB, lambda n: None, lambda: False)
        put.close()
    assert answer.status_code == 403 and b"AccessDenied" in answer.content
