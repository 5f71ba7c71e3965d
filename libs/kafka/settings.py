"""Client settings maps (``consumerSettings``/``producerSettings``): Java keys, secrets, checks.

ChunJun passes its settings maps to the Java client, so pasted jobs carry Java-only keys that
librdkafka rejects (``zookeeper.connect``, ``key.deserializer``, ``buffer.memory``...). A key with
a librdkafka equivalent is translated (``buffer.memory`` → ``queue.buffering.max.kbytes``,
``max.request.size`` → ``message.max.bytes``, a PLAIN/SCRAM ``sasl.jaas.config`` →
``sasl.username``/``sasl.password``); a Java-only key without one is dropped, and the plugin
warns once naming them. Any other key must be a librdkafka property: librdkafka itself is asked
(a client is built, never connected), so an unknown key or a bad value is a validation error
naming its path.

Values of secret keys (passwords, JAAS configs, keys) are held as :class:`SecretStr`, so they
are masked in every output, the job fingerprint and checkpoints.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import SecretStr

__all__ = [
    "JAVA_ONLY",
    "Role",
    "client_config",
    "is_secret",
    "translate",
    "validate_settings",
]

Role = Literal["consumer", "producer"]

JAVA_ONLY = frozenset(
    {
        "zookeeper.connect",
        "auto.commit.enable",
        "key.deserializer",
        "value.deserializer",
        "key.serializer",
        "value.serializer",
        "max.block.ms",
        "max.poll.records",
        "max.poll.interval.ms.config",
        "partitioner.class",
        "interceptor.classes",
        "ssl.truststore.location",
        "ssl.truststore.password",
        "ssl.truststore.type",
        "ssl.keystore.type",
        "ssl.endpoint.identification.algorithm.config",
        "sasl.login.class",
        "sasl.client.callback.handler.class",
        "metric.reporters",
        "default.api.timeout.ms",
        "delivery.timeout.ms.config",
        "exclude.internal.topics",
        "client.dns.lookup",
        "auto.create.topics.enable",
    }
)
"""Java client keys with no librdkafka equivalent: dropped with one warning."""

_SECRET = re.compile(r"password|secret|jaas|(^|\.)key$|token|credentials", re.IGNORECASE)
_JAAS = re.compile(r"""(username|password)\s*=\s*"([^"]*)\"""")

_OWNED: dict[Role, frozenset[str]] = {
    "consumer": frozenset({"enable.auto.commit", "enable.auto.offset.store", "isolation.level"}),
    "producer": frozenset({"transactional.id"}),
}
"""Keys syncx sets itself (a user value would break the delivery guarantee): ignored, warned."""


def is_secret(key: str) -> bool:
    """Whether a settings key holds a secret (its value is masked everywhere)."""
    return bool(_SECRET.search(key))


def _plain(value: Any) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def translate(settings: Mapping[str, Any], role: Role) -> tuple[dict[str, str], list[str]]:
    """librdkafka's config for a settings map, and the keys dropped (Java-only or owned)."""
    config: dict[str, str] = {}
    dropped: list[str] = []
    for key, raw in settings.items():
        value = _plain(raw)
        if key in JAVA_ONLY or key in _OWNED[role]:
            dropped.append(key)
        elif key == "buffer.memory":
            config["queue.buffering.max.kbytes"] = str(max(1, int(value) // 1024))
        elif key == "max.request.size":
            config["message.max.bytes"] = value
        elif key == "sasl.mechanism":
            config["sasl.mechanisms"] = value
        elif key == "sasl.jaas.config":
            found = dict(_JAAS.findall(value))
            if "username" in found:
                config["sasl.username"] = found["username"]
            if "password" in found:
                config["sasl.password"] = found["password"]
        elif key == "bootstrap.servers":
            config[key] = ",".join(part.strip() for part in value.split(",") if part.strip())
        else:
            config[key] = value
    return config, dropped


def validate_settings(settings: Mapping[str, Any], role: Role) -> dict[str, Any]:
    """Check a settings map as a model validator does: ``bootstrap.servers`` present, every key a
    librdkafka property or a known Java key, secrets wrapped. Raises ``ValueError``."""
    if not str(settings.get("bootstrap.servers") or "").strip():
        msg = "must hold 'bootstrap.servers' (host:port of one or more brokers)"
        raise ValueError(msg)
    wrapped = {
        key: SecretStr(_plain(value)) if is_secret(key) and value is not None else value
        for key, value in settings.items()
    }
    config, _dropped = translate(wrapped, role)
    problems = _librdkafka_problems(config, role)
    if problems:
        raise ValueError("; ".join(problems))
    return wrapped


def _librdkafka_problems(config: dict[str, str], role: Role) -> list[str]:
    """What librdkafka says about each key (a client is built without brokers, never used)."""
    try:
        import confluent_kafka  # noqa: PLC0415 - the optional driver, only when installed
    except ModuleNotFoundError:
        return []
    probe = {k: v for k, v in config.items() if k != "bootstrap.servers"}
    probe["log_level"] = "0"
    factory = confluent_kafka.Consumer if role == "consumer" else confluent_kafka.Producer
    if role == "consumer":
        probe.setdefault("group.id", "syncx-validate")
    problems: list[str] = []
    for _ in range(len(probe) + 1):
        try:
            client = factory(probe)
        except (confluent_kafka.KafkaException, ValueError, TypeError) as exc:
            error = exc.args[0] if exc.args else exc
            text = error.str() if isinstance(error, confluent_kafka.KafkaError) else str(error)
            found = re.search(r'property:? "?([\w.\-]+)"?', text)
            key = found.group(1) if found else None
            if key is None or key not in probe:
                problems.append(_strip_value(text, probe))
                break
            unknown = "No such configuration property" in text
            what = (
                "unknown key (neither a librdkafka property nor a Java client key syncx knows)"
                if unknown
                else "invalid value"
            )
            problems.append(f"'{key}': {what}")
            probe.pop(key)
            continue
        if role == "consumer":
            client.close()
        break
    return problems


def _strip_value(text: str, config: Mapping[str, str]) -> str:
    """librdkafka's message with every configured value removed (a value may be a secret)."""
    for value in config.values():
        if value and len(value) > 2:
            text = text.replace(value, "***")
    return text


def client_config(
    settings: Mapping[str, Any], role: Role, overrides: Mapping[str, str]
) -> tuple[dict[str, str], list[str]]:
    """The config a client is built with: the translated settings plus syncx's own keys."""
    config, dropped = translate(settings, role)
    config.update(overrides)
    return config, dropped
