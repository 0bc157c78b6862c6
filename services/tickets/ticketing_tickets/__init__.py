"""tickets: tickets for sale, their edits, and their reservation by orders."""
