"""orders: reserve a ticket for a limited time; cancel, expire, and complete on payment."""
