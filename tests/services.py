"""Real services for tests: skip locally when one is absent, fail under CI=true."""

from __future__ import annotations

import os
import socket

import pytest

POSTGRES_URL = os.environ.get("IIP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
NATS_URL = os.environ.get("IIP_TEST_NATS_URL", "nats://127.0.0.1:4222")
MQTT_HOST, MQTT_PORT = "127.0.0.1", 1883
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip (locally) or fail (CI) when a real service is not listening."""
    if port_open(host, port):
        return
    message = f"{name} is not reachable at {host}:{port}"
    if in_ci():
        pytest.fail(message + " (CI=true: real services are required)")
    pytest.skip(message)
