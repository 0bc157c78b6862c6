"""expiration: durable order timers that publish expiration.complete when an order's reservation ends."""
