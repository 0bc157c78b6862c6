"""payments: charges orders exactly once and publishes payment.created."""
