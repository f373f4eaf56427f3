"""The API's keep-alive against its clients' idle expiry: CI once lost a request of a
400-request crowd to a reset (httpx ReadError) because both were 5 s, so a client could
reuse an idle connection at the moment the server closed it. The server must outlive the
idle expiry of the clients it is most often called by (httpx, Node: 5 s)."""

from __future__ import annotations

import httpx

from shared.settings import Settings

NODE_AGENT_IDLE_SECONDS = 5.0  # Node's http.Agent keepAlive default (Node 19+)


def test_the_server_keeps_an_idle_connection_longer_than_common_clients_do():
    server = Settings().api_keep_alive_seconds
    httpx_expiry = httpx.Limits().keepalive_expiry
    assert httpx_expiry is not None
    assert server > max(httpx_expiry, NODE_AGENT_IDLE_SECONDS), (server, httpx_expiry)
