"""ticketing-common: the event bus, errors, auth, database and test harness every ticketing service shares."""
