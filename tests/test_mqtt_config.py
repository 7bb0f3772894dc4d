"""[mqtt] in the config file: what a technician writes to send events to a broker (Home Assistant's), the
defaults they rely on, every mistake named by its key, and the password never shown."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from edgenvr.config.checking import ConfigError, load_config, parse_config
from edgenvr.config.records import Config, MqttConfig
from edgenvr.config.writing import config_to_toml
from tests.test_layering import _copy, _lint

PASSWORD = "kata sandi rahasia 7"
FINGERPRINT = ":".join(["AB"] * 32)


def _mqtt(body: str) -> MqttConfig:
    return parse_config(f"[mqtt]\n{body}").mqtt


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as refused:
        parse_config(text)
    return refused.value.problems


def test_a_config_without_mqtt_publishes_nothing() -> None:
    config = parse_config("")
    assert config.mqtt == MqttConfig() and config.mqtt.enabled is False


def test_the_host_alone_gets_mqtts_defaults() -> None:
    mqtt = _mqtt('host = "192.168.1.10"\n')
    assert mqtt.enabled and mqtt.broker_port == 1883 and not mqtt.tls
    assert (mqtt.username, mqtt.password, mqtt.discovery, mqtt.discovery_prefix) == (None, None, True, "homeassistant")
    config = parse_config('[box]\nid = "rt08-kuningan"\n[mqtt]\nhost = "broker.lan"\n')
    assert config.mqtt.prefix_for(config.box.box_id) == "edgenvr/rt08-kuningan"
    assert config.mqtt.client_id_for(config.box.box_id) == "edgenvr-rt08-kuningan"


def test_tls_moves_the_default_port_and_a_given_port_wins() -> None:
    assert _mqtt('host = "broker.lan"\ntls = true\n').broker_port == 8883
    assert _mqtt('host = "broker.lan"\ntls = true\nport = 18883\n').broker_port == 18883
    assert _mqtt('host = "::1"\nport = 1\n').broker_port == 1
    assert _mqtt('host = "[fe80::1]"\nport = 65535\n').host == "fe80::1"


def test_a_full_table_loads_and_is_written_back_as_read(tmp_path: Path) -> None:
    (tmp_path / "site-ca.pem").write_text("not read while parsing")
    path = tmp_path / "edgenvr.toml"
    path.write_text(f'[mqtt]\nhost = "ha.lan"\ntls = true\nca_file = "site-ca.pem"\nusername = "nvr"\n'
                    f'password = "{PASSWORD}"\nclient_id = "nvr-pos-rt08"\ntopic_prefix = "rumah/nvr"\n'
                    f'discovery = false\ndiscovery_prefix = "ha"\n')
    config = load_config(path)
    assert config.mqtt == MqttConfig(host="ha.lan", tls=True, ca_file=tmp_path / "site-ca.pem", username="nvr",
                                     password=PASSWORD, client_id="nvr-pos-rt08", topic_prefix="rumah/nvr",
                                     discovery=False, discovery_prefix="ha", enabled=True)
    assert parse_config(config_to_toml(config)) == Config(storage=config.storage, mqtt=config.mqtt)
    pinned = _mqtt(f'host = "ha.lan"\ntls = true\nbroker_fingerprint = "{FINGERPRINT.lower()}"\n')
    assert pinned.broker_fingerprint == FINGERPRINT


@pytest.mark.parametrize(("body", "key_path", "fragment"), [
    ("port = 1883\n", "mqtt.host", "required when [mqtt] is present"),
    ('host = ""\n', "mqtt.host", "must not be empty"),
    ('host = "mqtt://broker.lan:1883"\n', "mqtt.host", "is a URL: give the host alone"),
    ('host = "broker.lan:1883"\n', "mqtt.host", "give the port in the port key"),
    ('host = "home_server"\n', "mqtt.host", "is not a host name or IP address"),
    ('host = "broker lan"\n', "mqtt.host", "is not a host name or IP address"),
    ("host = 10\n", "mqtt.host", "expected a string, got integer 10"),
    ('host = "h"\nport = 0\n', "mqtt.port", "must be from 1 to 65535, got 0"),
    ('host = "h"\nport = 65536\n', "mqtt.port", "must be from 1 to 65535, got 65536"),
    ('host = "h"\nport = "1883"\n', "mqtt.port", 'expected a whole number, got string "1883"'),
    ('host = "h"\nport = 1883.5\n', "mqtt.port", "expected a whole number"),
    ('host = "h"\ntls = "yes"\n', "mqtt.tls", "expected true or false"),
    ('host = "h"\nca_file = "ca.pem"\n', "mqtt.ca_file", "used only with tls = true"),
    (f'host = "h"\nbroker_fingerprint = "{FINGERPRINT}"\n', "mqtt.broker_fingerprint", "used only with tls = true"),
    (f'host = "h"\ntls = true\nca_file = "ca.pem"\nbroker_fingerprint = "{FINGERPRINT}"\n',
     "mqtt.broker_fingerprint", "not both"),
    ('host = "h"\ntls = true\nbroker_fingerprint = "AB:CD"\n', "mqtt.broker_fingerprint", "64 hex digits"),
    ('host = "h"\nusername = ""\n', "mqtt.username", "must not be empty"),
    ('host = "h"\npassword = "x"\n', "mqtt.password", "needs a username"),
    ('host = "h"\nusername = "nvr"\npassword = ""\n', "mqtt.password", "must not be empty"),
    ('host = "h"\nclient_id = "nvr box"\n', "mqtt.client_id", "use 1 to 128 letters, digits"),
    ('host = "h"\nclient_id = ""\n', "mqtt.client_id", "use 1 to 128"),
    ('host = "h"\ntopic_prefix = "edgenvr/#"\n', "mqtt.topic_prefix", "wildcards"),
    ('host = "h"\ntopic_prefix = "edgenvr/+/x"\n', "mqtt.topic_prefix", "wildcards"),
    ('host = "h"\ntopic_prefix = "/edgenvr"\n', "mqtt.topic_prefix", "empty level"),
    ('host = "h"\ntopic_prefix = "edgenvr/"\n', "mqtt.topic_prefix", "empty level"),
    ('host = "h"\ntopic_prefix = "a//b"\n', "mqtt.topic_prefix", "empty level"),
    ('host = "h"\ntopic_prefix = "$SYS/x"\n', "mqtt.topic_prefix", "broker's own"),
    ('host = "h"\ntopic_prefix = "rumah saya"\n', "mqtt.topic_prefix", "spaces"),
    (f'host = "h"\ntopic_prefix = "{"a" * 201}"\n', "mqtt.topic_prefix", "at most 200"),
    ('host = "h"\ndiscovery_prefix = ""\n', "mqtt.discovery_prefix", "must not be empty"),
    ('host = "h"\nhostname = "x"\n', "mqtt.hostname", 'did you mean "host"'),
])
def test_bad_mqtt_values_name_the_key(body: str, key_path: str, fragment: str) -> None:
    problems = _problems(f"[mqtt]\n{body}")
    assert len(problems) == 1 and problems[0].startswith(f"{key_path}: ") and fragment in problems[0], problems


def test_mqtt_must_be_a_table() -> None:
    assert _problems('mqtt = "broker.lan"\n') == ['mqtt: expected a table ([mqtt]), got string "broker.lan"']


def test_the_password_is_in_no_repr_and_no_message(caplog: pytest.LogCaptureFixture) -> None:
    mqtt = _mqtt(f'host = "broker.lan"\nusername = "nvr"\npassword = "{PASSWORD}"\n')
    config = parse_config(f'[mqtt]\nhost = "broker.lan"\nusername = "nvr"\npassword = "{PASSWORD}"\n')
    assert PASSWORD not in repr(mqtt) and PASSWORD not in str(mqtt) and PASSWORD not in repr(config)
    assert "password=" in repr(mqtt)
    # The same text pasted under other keys, and the password itself malformed: never echoed.
    for text in (f'[mqtt]\nhost = "{PASSWORD}"\nusername = "nvr"\npassword = "{PASSWORD}"\n',
                 f'[mqtt]\nhost = "h"\nusername = "nvr"\npassword = "{PASSWORD}"\nclient_id = "{PASSWORD}"\n',
                 f'[mqtt]\nhost = "h"\nusername = "nvr"\npassword = "{PASSWORD}"\ntopic_prefix = "{PASSWORD}"\n',
                 f'[mqtt]\nhost = "h"\nusername = "nvr"\npassword = "{PASSWORD}\\n"\n',
                 f'[mqtt]\nhost = "h"\npassword = "{PASSWORD}"\n'):
        problems = _problems(text)
        assert problems and not any(PASSWORD in problem or PASSWORD.strip() in problem for problem in problems), problems
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("test").info("config: %r", config)
    assert PASSWORD not in caplog.text


def test_only_the_runtime_may_import_home_automation(tmp_path: Path) -> None:
    """The MQTT publisher sits beside web and sync: neither they nor the hub import it (the supervisor starts it)."""
    copy = _copy(tmp_path)
    module = copy / "edgenvr" / "sync" / "outbox.py"
    module.write_text(module.read_text() + "\nimport edgenvr.home_automation.mqtt_publisher  # added by the test\n")
    result = _lint(copy)
    assert result.returncode != 0 and "edgenvr.home_automation" in result.stdout, result.stdout
