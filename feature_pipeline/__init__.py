"""Feature tables computed from the event table, and the Feast store that serves them."""
