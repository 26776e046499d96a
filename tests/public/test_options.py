from __future__ import annotations

from pathlib import Path

import pytest

from tinycortex_sa import OptionError, Options
from tinycortex_sa.options import DEFAULTS, FILE_SCOPED, parse, resolve


def test_defaults_match_the_rust_core() -> None:
    assert (
        Options(
            busy_timeout=15000,
            breaker_threshold=3,
            breaker_cooldown=30.0,
            checkout_timeout=30.0,
            on_corrupt="quarantine",
            auto_migrate=True,
            content_root=None,
            embedding_model="nomic-embed-text",
            embedding_dim=768,
        )
        == DEFAULTS
    )
    assert "checkout_timeout" not in FILE_SCOPED
    assert {"busy_timeout", "on_corrupt", "breaker_threshold"} <= FILE_SCOPED


def test_strings_from_a_url_convert_like_keyword_values() -> None:
    from_url = parse(
        {
            "busy_timeout": "5000",
            "breaker_cooldown": "2.5",
            "auto_migrate": "false",
            "on_corrupt": "raise",
            "content_root": "/tmp/c",
            "embedding_dim": "384",
        }
    )
    from_kw = parse(
        {
            "busy_timeout": 5000,
            "breaker_cooldown": 2.5,
            "auto_migrate": False,
            "on_corrupt": "raise",
            "content_root": Path("/tmp/c"),
            "embedding_dim": 384,
        }
    )
    assert from_url == from_kw
    assert resolve(from_url).busy_timeout == 5000
    assert resolve({}) is DEFAULTS


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ({"busy_timout": 1}, "busy_timout"),
        ({"busy_timeout": "soon"}, "busy_timeout"),
        ({"busy_timeout": True}, "busy_timeout"),
        ({"busy_timeout": -1}, "busy_timeout"),
        ({"breaker_threshold": 0}, "breaker_threshold"),
        ({"breaker_cooldown": "-3"}, "breaker_cooldown"),
        ({"checkout_timeout": "nan"}, "checkout_timeout"),
        ({"checkout_timeout": float("inf")}, "checkout_timeout"),
        ({"breaker_cooldown": 1e300}, "breaker_cooldown"),
        ({"busy_timeout": 2**31}, "busy_timeout"),
        ({"embedding_dim": 2**24 + 1}, "embedding_dim"),
        ({"on_corrupt": "delete"}, "on_corrupt"),
        ({"auto_migrate": "maybe"}, "auto_migrate"),
        ({"embedding_model": "a@b"}, "embedding_model"),
        ({"embedding_dim": 1.5}, "embedding_dim"),
        ({"content_root": 3}, "content_root"),
    ],
)
def test_bad_options_are_rejected_by_name(raw: dict[str, object], named: str) -> None:
    with pytest.raises(OptionError, match=named):
        parse(raw)
