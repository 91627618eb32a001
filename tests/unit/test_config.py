"""The client reads its environment the way the official SDK does."""

import pytest

from aisbatchfs.ais.config import ClientConfig


def test_environment_is_read_like_the_sdk():
    env = {
        "AIS_ENDPOINT": "https://ais.example:51080",
        "AIS_AUTHN_TOKEN": "tok",
        "AIS_SKIP_VERIFY_CRT": "true",
        "AIS_CLIENT_CA": "/ca.pem",
        "AIS_CRT": "/c.pem",
        "AIS_CRT_KEY": "/k.pem",
    }
    cfg = ClientConfig.from_env(env=env)
    assert cfg.endpoint == "https://ais.example:51080"
    assert cfg.token == "tok" and "tok" not in repr(cfg)
    assert cfg.verify is False and cfg.cert == ("/c.pem", "/k.pem")
    cfg = ClientConfig.from_env(env={**env, "AIS_SKIP_VERIFY_CRT": "", "AIS_SKIP_VERIFY": "no"})
    assert cfg.verify == "/ca.pem"
    cfg = ClientConfig.from_env(env={"AIS_ENDPOINT": "h:1", "AIS_SKIP_VERIFY": "1", "AIS_CRT": "/c"})
    assert cfg.verify is False and cfg.cert is None and cfg.endpoint == "http://h:1"
    assert ClientConfig.from_env("http://explicit:2", env=env).endpoint == "http://explicit:2"
    with pytest.raises(ValueError, match="AIS_ENDPOINT"):
        ClientConfig.from_env(env={})
