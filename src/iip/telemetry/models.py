"""ORM models of the time-series store and the twin (tables prefixed `telemetry_`)."""
