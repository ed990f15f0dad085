"""Security: passive ICS traffic monitoring, asset inventory, learned allowlist detection, honeypot,
advisory matching and early warning."""
