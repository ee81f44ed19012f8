"""Secret settings: which keys hold secrets, file references, and redaction.

Secrets are the Kafka credentials in ``kafka.client`` / ``client_python`` / ``client_spark`` (any property
whose name contains "password", "secret", "jaas" or "credential", plus ``ssl.key.pem``, ``ssl.keystore.key``
and ``sasl.oauthbearer.config``), secret-looking keys of ``spark.conf`` (e.g. ``spark.hadoop.fs.s3a.secret.key``)
and ``dashboard.basic_auth_password``. Each can be given

- in the deployment file (fine for development only),
- through the environment, like every setting: ``TRAFFICSTREAM_KAFKA__CLIENT_PYTHON__SASL.PASSWORD=...``,
- as a file reference: the value ``file:/run/secrets/kafka_password`` (in the file, the environment or
  ``--set``) is replaced by the content of that file, without its trailing newline. A literal secret that
  itself starts with ``file:`` cannot be given inline; put it in a file.

Quote secrets written into YAML: an unquoted ``0123`` is the number 83 there. Environment and ``--set``
values of secret keys are taken as text, never parsed as YAML.

The settings never show a secret: ``repr``, ``str``, ``model_dump()`` and error messages print ``**********``,
and :func:`trafficstream.config.settings_to_json` (what Spark tasks receive) leaves secrets out. Only
``KafkaSettings.python_config()`` / ``spark_options()`` (and iterating the maps) give the real values.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import SecretStr, SerializationInfo

MASK = "**********"
FILE_PREFIX = "file:"
_MARKERS = ("password", "secret", "jaas", "credential", "account.key")
_EXACT = frozenset({"ssl.key.pem", "ssl.keystore.key", "sasl.oauthbearer.config"})


class SecretsMode(str, Enum):
    """How serialisation treats secrets (pass as ``context={"secrets": mode}`` to ``model_dump``)."""

    MASK = "mask"  # the default: "**********"
    OMIT = "omit"  # left out: what is shipped to Spark tasks or written for spark-submit
    INCLUDE = "include"  # real values


def is_secret_key(key: str) -> bool:
    """True for property names that carry credentials (case-insensitive)."""
    k = key.lower()
    return k in _EXACT or any(m in k for m in _MARKERS)


def secrets_mode(info: SerializationInfo | None) -> SecretsMode:
    ctx = info.context if info is not None else None
    value = ctx.get("secrets") if isinstance(ctx, Mapping) else None
    try:
        return SecretsMode(value) if value is not None else SecretsMode.MASK
    except ValueError:
        return SecretsMode.MASK


def resolve_reference(value: Any) -> Any:
    """``file:PATH`` -> the file's content (one trailing newline removed); anything else unchanged.

    Raises ``ValueError`` naming the path (never the content) when the file cannot be read.
    """
    if not isinstance(value, str) or not value.startswith(FILE_PREFIX):
        return value
    path = Path(value[len(FILE_PREFIX) :]).expanduser()
    if not str(path) or str(path) == ".":
        raise ValueError(f"secret file reference {value!r} names no file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ValueError(f"cannot read secret file {path}: {reason}") from None
    return text[:-2] if text.endswith("\r\n") else text.removesuffix("\n")


def reveal(value: SecretStr | str | None) -> str | None:
    """The plain value of a secret setting (accepts plain strings too, e.g. after ``model_copy``)."""
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def property_text(value: Any) -> Any:
    """Client properties are strings: YAML / env scalars (1, true) become the text the clients expect."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return value


class SecretMap(dict[str, str]):
    """A property map holding real values, whose secret entries are masked when it is printed.

    ``{**m}``, ``m[key]`` and ``m.items()`` give real values (the clients need them); ``repr`` / ``str``
    (and so ``repr(Settings)``, f-strings, ``pprint``) show ``**********`` for secret keys.
    """

    def redacted(self) -> dict[str, str]:
        return {k: MASK if is_secret_key(k) else v for k, v in self.items()}

    def public(self) -> dict[str, str]:
        """Without the secret entries."""
        return {k: v for k, v in self.items() if not is_secret_key(k)}

    def secrets(self) -> dict[str, str]:
        return {k: v for k, v in self.items() if is_secret_key(k)}

    def __repr__(self) -> str:
        return repr(self.redacted())

    __str__ = __repr__


def serialize_map(value: Mapping[str, str], info: SerializationInfo) -> dict[str, str]:
    """Serializer of secret-bearing property maps, honouring the ``secrets`` context (masked by default)."""
    m = value if isinstance(value, SecretMap) else SecretMap(value)
    mode = secrets_mode(info)
    if mode is SecretsMode.INCLUDE:
        return dict(m)
    return m.public() if mode is SecretsMode.OMIT else m.redacted()


def serialize_secret(value: SecretStr | str | None, info: SerializationInfo) -> Any:
    """Serializer of a single secret, honouring the ``secrets`` context (masked by default)."""
    if value is None:
        return None
    mode = secrets_mode(info)
    if mode is SecretsMode.INCLUDE:
        return reveal(value)
    if mode is SecretsMode.OMIT:
        return None
    return MASK if info.mode == "json" or not isinstance(value, SecretStr) else value
