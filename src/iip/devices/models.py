"""ORM models of the device registry (tables prefixed `devices_`)."""
