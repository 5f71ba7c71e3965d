"""The confluent-kafka driver for the Kafka plugins: imported on use, errors in plain words.

Topics are looked up in the full metadata (never by name: a metadata request for one topic may
create it where the broker auto-creates topics), and created only when a job asks
(``createTopic: true``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from types import ModuleType

from sync.errors import FatalError, JobFailedError, RetriableError
from sync.registry import require

__all__ = [
    "describe",
    "driver",
    "ensure_topics",
    "error_code",
    "list_topics",
    "quiet",
]

log = logging.getLogger(__name__)

_TIMEOUT = 10.0


def driver(plugin: str) -> ModuleType:
    """``confluent_kafka`` (with its ``admin`` module), or a job-file error naming the extra
    that installs it."""
    require("confluent_kafka.admin", "kafka", plugin)
    return require("confluent_kafka", "kafka", plugin)


def quiet(config: Mapping[str, str]) -> dict[str, str]:
    """``config`` with librdkafka's own stderr logging routed to Python's (warnings and up)."""
    return {**config, "logger": logging.getLogger("librdkafka")}  # type: ignore[dict-item]


def error_code(exc: BaseException) -> str | None:
    """The librdkafka error name of a ``KafkaException`` (``_TRANSPORT``...), else ``None``."""
    error = exc.args[0] if exc.args else None
    name = getattr(error, "name", None)
    return name() if callable(name) else None


def describe(exc: BaseException) -> str:
    """A ``KafkaException``'s message (librdkafka's text), or ``str(exc)``."""
    error = exc.args[0] if exc.args else None
    text = getattr(error, "str", None)
    return text() if callable(text) else str(exc)


def list_topics(kafka: ModuleType, config: Mapping[str, str], where: str) -> dict[str, int]:
    """Topic → partition count, from the cluster's metadata.

    ``where`` names the settings map (``...parameter.consumerSettings``) for the message when
    no broker answers.
    """
    admin = kafka.admin.AdminClient(quiet(config))
    try:
        metadata = admin.list_topics(timeout=_TIMEOUT)
    except kafka.KafkaException as exc:
        servers = config.get("bootstrap.servers", "")
        msg = f"no Kafka broker answers at {servers} ({where}.bootstrap.servers): {describe(exc)}"
        raise RetriableError(msg) from exc
    return {
        name: len(topic.partitions)
        for name, topic in metadata.topics.items()
        if topic.error is None
    }


def ensure_topics(
    kafka: ModuleType,
    config: Mapping[str, str],
    topics: Iterable[str],
    *,
    create: bool,
    partitions: int,
    where: str,
    known: dict[str, int] | None = None,
) -> dict[str, int]:
    """Topic → partition count for ``topics``; a missing one is created when ``create``, else an
    error naming the parameter. ``known`` is an earlier :func:`list_topics` result to reuse."""
    found = dict(known) if known is not None else list_topics(kafka, config, where)
    missing = [t for t in dict.fromkeys(topics) if t not in found]
    if missing and not create:
        listed = ", ".join(missing)
        msg = (
            f"{where}: topic(s) {listed} do not exist; create them, or set createTopic: true to "
            "let syncx create them"
        )
        raise FatalError(msg)
    if missing:
        admin = kafka.admin.AdminClient(quiet(config))
        futures = admin.create_topics(
            [kafka.admin.NewTopic(t, partitions, -1) for t in missing],
            operation_timeout=_TIMEOUT,
        )
        for name, future in futures.items():
            try:
                future.result(timeout=_TIMEOUT)
            except kafka.KafkaException as exc:
                if error_code(exc) != "TOPIC_ALREADY_EXISTS":
                    msg = f"{where}: cannot create topic {name}: {describe(exc)}"
                    raise JobFailedError(msg) from exc
            log.info("created topic %s (%d partitions)", name, partitions)
            found[name] = partitions
    return {t: found[t] for t in topics}
