"""The edge agent (`iip edge`): polls devices beside the machines and forwards their points to the
platform over HTTP or MQTT, keeping them in an on-disk outbox while the platform is unreachable."""
