"""miniupnpc's failure texts, as loxgw passes them on."""

from __future__ import annotations

from loxgw.edges.upnpc import _detail


def test_success_as_an_error_text_is_left_out() -> None:
    assert (_detail(Exception("Success")), _detail(Exception("")), _detail(Exception("Miniupnpc Unknown Error"))) == (
        "", "", " (Miniupnpc Unknown Error)")
