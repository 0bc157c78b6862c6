"""auth: sign-up, sign-in and sessions (JWT in the `session` cookie)."""
