"""HTTP gate request shape (interfaces.md §4.3): credentials move from the URL to Basic auth."""

from __future__ import annotations

from gateway.io.gate_http import build_request


def test_s130_credentials_removed_from_url_and_sent_as_basic_auth() -> None:
    req = build_request("http://admin:88888888@192.168.0.245/cdor.cgi?door=0&open=1")
    assert req.url == "http://192.168.0.245/cdor.cgi?door=0&open=1"
    assert req.headers == {
        "Accept": "*/*",
        "User-Agent": "curl/7.88.1",
        "Authorization": "Basic YWRtaW46ODg4ODg4ODg=",
    }


def test_url_without_credentials_is_kept_and_has_no_authorization() -> None:
    req = build_request("http://10.0.0.5:8080/open?x=1")
    assert req.url == "http://10.0.0.5:8080/open?x=1"
    assert "Authorization" not in req.headers


def test_port_kept_and_percent_encoded_credentials_decoded() -> None:
    req = build_request("https://us%40er:p%3Ass@gate.local:8443/cgi")
    assert req.url == "https://gate.local:8443/cgi"
    # base64("us@er:p:ss")
    assert req.headers["Authorization"] == "Basic dXNAZXI6cDpzcw=="


def test_user_without_password() -> None:
    req = build_request("http://admin@host/x")
    assert req.url == "http://host/x"
    assert req.headers["Authorization"] == "Basic YWRtaW46"  # base64("admin:")
