"""HTTP edge: the app factory, the one error mapper, shared dependencies and middleware."""
